// The node protocol's wire schemas are defined once, in @flotilla/fleet-protocol.
export {
  ErrorBodySchema,
  NODE_STATUSES,
  type NodeStatus,
  PollResponseSchema,
  REPORTED_STATUSES,
  type Registration,
  RegistrationSchema,
  type ReportedStatus,
  type SessionLog,
  SessionLogSchema,
  type SessionMessage,
  SessionMessageSchema,
  type TaskAssignment,
  TaskAssignmentSchema,
} from "@flotilla/fleet-protocol";
