// The model as a tree, built from the dotted leaf paths of GET …/state: each subtree with
// the rule, learning rate and frozen state its leaves share (or that they differ).

import { fmtHyper } from "./format";
import { ruleEta } from "./rates";
import type { RuleSpec, StateTree } from "./types";

export interface TreeNode {
  /** The subtree's path, as controls take it ("" for the whole model). */
  path: string;
  /** Its last path component ("model" for the root). */
  name: string;
  depth: number;
  children: TreeNode[];
  /** How many parameter arrays it holds. */
  leaves: number;
  /** The rule its leaves share; null when they differ. */
  rule: RuleSpec | null;
  /** The learning rate its leaves share; null when they differ or have none. */
  eta: number | null;
  frozen: "all" | "none" | "some";
  /** The hyper-parameters its rules have (what an adjust may set), sorted. */
  hypers: string[];
  /** The hyper-parameters a schedule drives in some leaf. */
  scheduled: string[];
}

interface Acc {
  node: TreeNode;
  ruleKey: string | null | undefined;
  frozenCount: number;
  hypers: Set<string>;
  scheduled: Set<string>;
  childByName: Map<string, Acc>;
}

/** The hyper-parameter names of a rule (its members' too, for a chain). */
export function hyperNames(rule: RuleSpec): string[] {
  const names = new Set<string>();
  const walk = (r: RuleSpec) => {
    for (const k of Object.keys(r)) if (k !== "rule" && k !== "rules") names.add(k);
    (r.rules ?? []).forEach(walk);
  };
  walk(rule);
  return [...names].sort();
}

/** A rule as the engine writes it: ``Adam(eta=0.003, beta=(0.9, 0.999))``. */
export function ruleText(rule: RuleSpec): string {
  if (rule.rules) return `${rule.rule}(${rule.rules.map(ruleText).join(", ")})`;
  const args = Object.entries(rule).filter(([k]) => k !== "rule")
    .map(([k, v]) => `${k}=${Array.isArray(v) ? `(${v.map(fmtHyper).join(", ")})` : fmtHyper(v)}`);
  return `${rule.rule}(${args.join(", ")})`;
}

/** A rule's name in short: ``Adam``, ``OptimiserChain(WeightDecay, Adam)``. */
export function ruleName(rule: RuleSpec): string {
  return rule.rules ? `${rule.rule}(${rule.rules.map(ruleName).join(", ")})` : rule.rule;
}

function acc(path: string, name: string, depth: number): Acc {
  return {
    node: {
      path, name, depth, children: [], leaves: 0, rule: null, eta: null, frozen: "none",
      hypers: [], scheduled: [],
    },
    ruleKey: undefined, frozenCount: 0, hypers: new Set(), scheduled: new Set(),
    childByName: new Map(),
  };
}

/** The tree of the leaves' paths, children in the order the state lists them. */
export function buildTree(state: StateTree): TreeNode {
  const root = acc("", "model", 0);
  const rules = new Map<Acc, RuleSpec>();
  for (const [leafPath, leaf] of Object.entries(state)) {
    const parts = leafPath === "" ? [] : leafPath.split(".");
    const chain = [root];
    let cur = root;
    parts.forEach((part, i) => {
      let next = cur.childByName.get(part);
      if (!next) {
        next = acc(parts.slice(0, i + 1).join("."), part, i + 1);
        cur.childByName.set(part, next);
        cur.node.children.push(next.node);
      }
      chain.push(next);
      cur = next;
    });
    const key = JSON.stringify(leaf.rule);
    for (const a of chain) {
      a.node.leaves++;
      if (leaf.frozen) a.frozenCount++;
      hyperNames(leaf.rule).forEach((h) => a.hypers.add(h));
      Object.keys(leaf.scheduled ?? {}).forEach((h) => a.scheduled.add(h));
      if (a.ruleKey === undefined) {
        a.ruleKey = key;
        rules.set(a, leaf.rule);
      } else if (a.ruleKey !== key) a.ruleKey = null;
    }
  }
  const finish = (a: Acc): void => {
    const n = a.node;
    n.rule = a.ruleKey ? rules.get(a) ?? null : null;
    n.eta = n.rule ? ruleEta(n.rule) : null;
    n.frozen = a.frozenCount === 0 ? "none" : a.frozenCount === n.leaves ? "all" : "some";
    n.hypers = [...a.hypers].sort();
    n.scheduled = [...a.scheduled].sort();
    a.childByName.forEach(finish);
  };
  finish(root);
  return root.node;
}

/** The nodes in display order (depth first), skipping the children of collapsed paths. */
export function flatten(root: TreeNode, collapsed: ReadonlySet<string> = new Set()): TreeNode[] {
  const out: TreeNode[] = [];
  const walk = (n: TreeNode) => {
    out.push(n);
    if (!collapsed.has(n.path)) n.children.forEach(walk);
  };
  walk(root);
  return out;
}

/** The node at ``path``, if the tree has one. */
export function findNode(root: TreeNode, path: string): TreeNode | null {
  if (path === "") return root;
  let cur: TreeNode | undefined = root;
  for (const part of path.split(".")) {
    cur = cur?.children.find((c) => c.name === part);
    if (!cur) return null;
  }
  return cur ?? null;
}

/** A hyper-parameter's value as typed: a number, or JSON (``[0.9, 0.999]``; the engine's
 * ``(0.9, 0.999)`` is taken as a list too). Throws a message for anything else. */
export function parseHyperValue(text: string): unknown {
  const t = text.trim();
  if (!t) throw new Error("give a value, e.g. 0.001");
  const json = /^\(.*\)$/s.test(t) ? `[${t.slice(1, -1)}]` : t;
  try {
    return JSON.parse(json);
  } catch {
    throw new Error(`${JSON.stringify(t)} is not a number or JSON (e.g. 0.001 or [0.9, 0.999])`);
  }
}
