// Type-level check (run by the package's typecheck): the core Orchestrator is a FleetOrchestrator.
import { Orchestrator } from "@flotilla/core";
import type { FleetOrchestrator } from "../../src/fleet/index.js";

export const orchestratorIsFleetOrchestrator: FleetOrchestrator = new Orchestrator();
