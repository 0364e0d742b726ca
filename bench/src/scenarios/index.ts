import type { Scenario } from "../report.js";
import { budgetScenario } from "./budget.js";
import { dagScenario } from "./dag.js";
import { dispatchScenario } from "./dispatch.js";
import { durableScenario } from "./durable.js";
import { fairnessScenario } from "./fairness.js";
import { historyScenario } from "./history.js";
import { httpScenario } from "./http.js";
import { longRunScenario } from "./longrun.js";
import { memoryScenario } from "./memory.js";
import { priorityScenario } from "./priority.js";
import { rateLimitScenario } from "./ratelimit.js";
import { scaleScenario } from "./scale.js";

/** Every scenario, in report order. */
export const scenarios: Scenario[] = [
  dispatchScenario,
  priorityScenario,
  rateLimitScenario,
  fairnessScenario,
  budgetScenario,
  httpScenario,
  dagScenario,
  durableScenario,
  historyScenario,
  memoryScenario,
  longRunScenario,
  scaleScenario,
];
