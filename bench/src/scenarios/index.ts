import type { Scenario } from "../report.js";
import { dagScenario } from "./dag.js";
import { dispatchScenario } from "./dispatch.js";
import { durableScenario } from "./durable.js";
import { priorityScenario } from "./priority.js";

/** Every scenario, in report order. */
export const scenarios: Scenario[] = [
  dispatchScenario,
  priorityScenario,
  dagScenario,
  durableScenario,
];
