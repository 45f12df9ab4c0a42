import { describe, expect, it } from "vitest";
import { buildTree, findNode, flatten, hyperNames, parseHyperValue, ruleName, ruleText } from "../src/tree";
import { STATE } from "./fixtures";

describe("buildTree", () => {
  const root = buildTree(STATE);

  it("builds the subtrees from the dotted leaf paths, in the state's order", () => {
    expect(flatten(root).map((n) => n.path)).toEqual([
      "", "layers", "layers.enc", "layers.enc.layers", "layers.enc.layers.0",
      "layers.enc.layers.0.weight", "layers.enc.layers.0.bias", "layers.dec", "layers.dec.layers",
      "layers.dec.layers.0", "layers.dec.layers.0.weight", "layers.dec.layers.0.bias",
    ]);
    expect(root.leaves).toBe(4);
    expect(findNode(root, "layers.enc.layers.0")?.depth).toBe(4);
  });

  it("gives a subtree the rate and rule its leaves share, and says where they differ", () => {
    const enc = findNode(root, "layers.enc")!;
    expect(enc.eta).toBe(0.001);
    expect(enc.rule?.rule).toBe("OptimiserChain");
    expect(enc.frozen).toBe("none");
    expect(findNode(root, "layers.dec")!.eta).toBe(0.003);
    expect(findNode(root, "layers.dec")!.frozen).toBe("all");
    expect(root.eta).toBeNull();
    expect(root.rule).toBeNull();
    expect(root.frozen).toBe("some");
    expect(root.hypers).toEqual(["beta", "epsilon", "eta", "lambda"]);
  });

  it("collects scheduled fields, and hides collapsed children", () => {
    const t = buildTree({
      "w": { rule: { rule: "Descent", eta: 0.1 }, frozen: false, scheduled: { eta: "" } },
      "b": { rule: { rule: "Descent", eta: 0.1 }, frozen: false, scheduled: {} },
    });
    expect(t.scheduled).toEqual(["eta"]);
    expect(t.eta).toBe(0.1);
    expect(flatten(t, new Set([""])).map((n) => n.path)).toEqual([""]);
    expect(findNode(t, "nope")).toBeNull();
  });
});

describe("rules", () => {
  const chain = STATE["layers.enc.layers.0.weight"].rule;
  it("reads as the engine writes them", () => {
    expect(ruleText(chain)).toBe(
      "OptimiserChain(WeightDecay(lambda=0.0001), Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8))");
    expect(ruleName(chain)).toBe("OptimiserChain(WeightDecay, Adam)");
    expect(hyperNames(chain)).toEqual(["beta", "epsilon", "eta", "lambda"]);
  });
});

describe("parseHyperValue", () => {
  it("reads numbers, JSON and the engine's tuples", () => {
    expect(parseHyperValue("1e-3")).toBe(0.001);
    expect(parseHyperValue(" -1 ")).toBe(-1);
    expect(parseHyperValue("[0.9, 0.99]")).toEqual([0.9, 0.99]);
    expect(parseHyperValue("(0.9, 0.99)")).toEqual([0.9, 0.99]);
  });
  it("says what it could not read", () => {
    expect(() => parseHyperValue("")).toThrow("give a value, e.g. 0.001");
    expect(() => parseHyperValue("fast")).toThrow('"fast" is not a number or JSON');
  });
});
