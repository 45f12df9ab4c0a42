import { describe, expect, it } from "vitest";
import { fmtAge, fmtBytes, fmtDevice, fmtDuration, fmtHyper, fmtNum, fmtPath } from "../src/format";

describe("format", () => {
  it("writes measured values in four significant digits", () => {
    expect(fmtNum(0.123456)).toBe("0.1235");
    expect(fmtNum(0.000123456)).toBe("0.0001235");
    expect(fmtNum(1.23456e-7)).toBe("1.235e-7");
    expect(fmtNum(3e-9)).toBe("3e-9");
    expect(fmtNum(12345)).toBe("12350");
    expect(fmtNum(0)).toBe("0");
    expect(fmtNum(null)).toBe("–");
  });

  it("says what device a job asked for; a job from an older server, any", () => {
    expect(fmtDevice("gpu")).toBe("a GPU");
    expect(fmtDevice("cpu")).toBe("a CPU");
    expect(fmtDevice("any")).toBe("any: CPU or GPU");
    expect(fmtDevice(undefined)).toBe("any: CPU or GPU");
  });

  it("writes hyper-parameters exactly as set", () => {
    expect(fmtHyper(0.0005)).toBe("0.0005");
    expect(fmtHyper(1e-8)).toBe("1e-8");
    expect(fmtHyper([0.9, 0.999])).toBe("[0.9,0.999]");
  });

  it("writes sizes, ages, durations and paths", () => {
    expect(fmtBytes(512)).toBe("512 B");
    expect(fmtBytes(475_000)).toBe("464 KiB");
    expect(fmtBytes(25_276_182_528)).toBe("24 GiB");
    const now = Date.parse("2026-12-06T12:00:00Z");
    expect(fmtAge("2026-12-06T11:59:50Z", now)).toBe("10 s");
    expect(fmtAge("2026-12-06T11:55:00Z", now)).toBe("5 min");
    expect(fmtAge("2026-12-06T09:00:00Z", now)).toBe("3 h");
    expect(fmtAge("2026-12-04T12:00:00Z", now)).toBe("2 d");
    expect(fmtAge("2026-12-06T12:00:05Z", now)).toBe("0 s"); // a clock ahead of ours
    expect(fmtDuration(0.48)).toBe("0.48 s");
    expect(fmtDuration(125)).toBe("2 min 5 s");
    expect(fmtPath("")).toBe("the model");
    expect(fmtPath("layers.enc")).toBe("layers.enc");
  });
});
