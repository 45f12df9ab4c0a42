// The model as a tree (from GET …/state), and the selected subtree's panel: set any
// hyper-parameter, freeze or thaw it, and follow each change from pending to applied
// (epoch and step) or rejected (the server's reason).

import { useMemo, useState } from "preact/hooks";
import type { ApiError } from "../api";
import { fmtHyper, fmtPath } from "../format";
import { controlLabel } from "../markers";
import { buildTree, findNode, flatten, parseHyperValue, ruleName, ruleText, type TreeNode } from "../tree";
import type { Control, ControlCreate, StateTree } from "../types";
import { ErrorBox } from "./common";

export function ControlOutcome({ c }: { c: Control }) {
  if (c.status === "applied") {
    return <span class="badge applied" data-testid="control-outcome">
      applied{c.applied_epoch !== null ? ` at epoch ${c.applied_epoch}, step ${c.applied_step}` : ""}
    </span>;
  }
  if (c.status === "rejected") {
    return <span class="badge rejected" data-testid="control-outcome">rejected: {c.reason ?? "no reason given"}</span>;
  }
  return <span class="badge pending" data-testid="control-outcome">pending</span>;
}

export function ModelTree({ state, controls, editable, onControl }: {
  state: StateTree | null;
  controls: Control[];
  /** Whether the job still takes controls (unfinished). */
  editable: boolean;
  onControl: (body: ControlCreate) => Promise<void>;
}) {
  const root = useMemo(() => buildTree(state ?? {}), [state]);
  const [selected, setSelected] = useState("");
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(() => new Set());
  const nodes = flatten(root, collapsed);
  const pendingPaths = new Set(controls.filter((c) => c.status === "pending").map((c) => c.path));
  const node = findNode(root, selected) ?? root;
  const empty = !state || Object.keys(state).length === 0;

  const toggle = (path: string) => setCollapsed((s) => {
    const next = new Set(s);
    if (!next.delete(path)) next.add(path);
    return next;
  });

  return (
    <div class="model">
      <div class="tree-box">
        {empty ? (
          <p class="empty" data-testid="tree-empty">The worker has not reported the model's state yet
            (it does once training starts). Controls on the whole model can be sent already.</p>
        ) : null}
        <ul role="tree" aria-label="Model" data-testid="model-tree">
          {(empty ? [] : nodes).map((n) => (
            <TreeRow key={n.path} node={n} selected={n.path === node.path} collapsed={collapsed.has(n.path)}
              pending={pendingPaths.has(n.path)} onSelect={setSelected} onToggle={toggle} />
          ))}
        </ul>
      </div>
      <SubtreePanel key={node.path} node={node} controls={controls.filter((c) => c.path === node.path)}
        editable={editable} onControl={onControl} />
    </div>
  );
}

function TreeRow({ node, selected, collapsed, pending, onSelect, onToggle }: {
  node: TreeNode; selected: boolean; collapsed: boolean; pending: boolean;
  onSelect: (path: string) => void; onToggle: (path: string) => void;
}) {
  const parent = node.children.length > 0;
  return (
    <li role="treeitem" aria-level={node.depth + 1} aria-selected={selected}
      aria-expanded={parent ? !collapsed : undefined} data-testid="tree-node" data-path={node.path}
      data-frozen={node.frozen} class={selected ? "selected" : undefined}
      style={{ paddingLeft: `${node.depth * 16}px` }}>
      {parent ? (
        <button type="button" class="twisty" aria-label={collapsed ? `Expand ${node.name}` : `Collapse ${node.name}`}
          onClick={() => onToggle(node.path)}>{collapsed ? "▸" : "▾"}</button>
      ) : <span class="twisty" />}
      <button type="button" class="node-name" data-testid="tree-node-select" onClick={() => onSelect(node.path)}>
        {node.name}
      </button>
      <span class="node-eta" data-testid="tree-node-eta" title="learning rate (eta)">
        {node.eta !== null ? `η ${fmtHyper(node.eta)}` : node.leaves > 1 && node.rule === null ? "η mixed" : ""}
      </span>
      {node.frozen !== "none" ? (
        <span class={`badge frozen-${node.frozen}`} data-testid="tree-node-frozen">
          {node.frozen === "all" ? "frozen" : "partly frozen"}</span>
      ) : null}
      {pending ? <span class="badge pending">pending</span> : null}
      <span class="node-rule">{node.rule ? ruleName(node.rule) : ""}</span>
    </li>
  );
}

function SubtreePanel({ node, controls, editable, onControl }: {
  node: TreeNode; controls: Control[]; editable: boolean;
  onControl: (body: ControlCreate) => Promise<void>;
}) {
  const [name, setName] = useState("eta");
  const [value, setValue] = useState("");
  const [error, setError] = useState<ApiError | Error | null>(null);
  const [busy, setBusy] = useState(false);
  const listId = `hypers-${node.path || "root"}`;

  const send = async (body: ControlCreate) => {
    setBusy(true);
    setError(null);
    try {
      await onControl(body);
      if (body.kind === "adjust") setValue("");
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(false);
    }
  };

  const adjust = (e: Event) => {
    e.preventDefault();
    const field = name.trim();
    if (!field) {
      setError(new Error("name the hyper-parameter to set, e.g. eta"));
      return;
    }
    let v: unknown;
    try {
      v = parseHyperValue(value);
    } catch (err) {
      setError(new Error(`${field}: ${(err as Error).message}`));
      return;
    }
    send({ kind: "adjust", path: node.path, hyper: { [field]: v } });
  };

  const current = node.rule ? hyperValue(node.rule, name.trim()) : undefined;
  return (
    <aside class="panel" data-testid="subtree-panel" data-path={node.path} aria-label={`Subtree ${fmtPath(node.path)}`}>
      <h3><code data-testid="subtree-path">{node.path || "(the whole model)"}</code></h3>
      <dl>
        <dt>Rule</dt>
        <dd data-testid="subtree-rule">{node.rule ? ruleText(node.rule) : "differs between its parts"}</dd>
        <dt>Learning rate</dt>
        <dd data-testid="subtree-eta">{node.eta !== null ? fmtHyper(node.eta) : node.leaves ? "differs between its parts" : "–"}</dd>
        <dt>Frozen</dt>
        <dd data-testid="subtree-frozen">{{ all: "yes", none: "no", some: "partly" }[node.frozen]}</dd>
        {node.scheduled.length ? <><dt>Scheduled</dt><dd>{node.scheduled.join(", ")} (a schedule sets them each step)</dd></> : null}
      </dl>
      <form class="adjust" onSubmit={adjust} data-testid="adjust-form" aria-label="Set a hyper-parameter">
        <label>Hyper-parameter
          <input data-testid="hyper-name" list={listId} value={name} size={10}
            onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <datalist id={listId}>{node.hypers.map((h) => <option key={h} value={h} />)}</datalist>
        <label>Value
          <input data-testid="hyper-value" value={value} size={10} inputMode="decimal"
            placeholder={current !== undefined ? fmtHyper(current) : "0.001"}
            onInput={(e) => setValue(e.currentTarget.value)} />
        </label>
        <button type="submit" data-testid="apply-hyper" disabled={!editable || busy}>Set</button>
      </form>
      <div class="actions">
        <button type="button" data-testid="freeze" disabled={!editable || busy}
          onClick={() => send({ kind: "freeze", path: node.path })}>Freeze</button>
        <button type="button" data-testid="thaw" disabled={!editable || busy}
          onClick={() => send({ kind: "thaw", path: node.path })}>Thaw</button>
      </div>
      <ErrorBox error={error} />
      {controls.length ? (
        <ul class="subtree-controls" aria-label="Changes to this subtree">
          {[...controls].reverse().slice(0, 6).map((c) => (
            <li key={c.seq} data-testid="subtree-control" data-seq={c.seq} data-status={c.status}>
              <span class="seq">#{c.seq}</span> {controlLabel(c)} <ControlOutcome c={c} />
            </li>
          ))}
        </ul>
      ) : null}
    </aside>
  );
}

/** The value of hyper-parameter ``name`` in a rule (its chain's member that has it). */
function hyperValue(rule: { [k: string]: unknown; rules?: unknown[] }, name: string): unknown {
  if (name in rule && name !== "rule" && name !== "rules") return rule[name];
  for (const r of (rule.rules ?? []) as { [k: string]: unknown }[]) {
    const v = hyperValue(r, name);
    if (v !== undefined) return v;
  }
  return undefined;
}
