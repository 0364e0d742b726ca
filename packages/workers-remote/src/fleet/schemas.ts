import { z } from "zod";

/** What `POST /register` answers: at least a node id and its API key. Extra fields are kept. */
export const RegistrationSchema = z.looseObject({
  id: z.string().min(1),
  api_key: z.string().min(1),
});
/** The answer of a successful registration. */
export type Registration = z.infer<typeof RegistrationSchema>;

/** A task handed to a node by `GET /tasks/pending`. Extra fields are kept. */
export const TaskAssignmentSchema = z.looseObject({
  task_id: z.string().min(1),
  prompt: z.string(),
  orchestrator_url: z.string().min(1),
  timeout_seconds: z.number().positive().nullish(),
  files: z.array(z.string()).nullish(),
  file_checksums: z.array(z.string()).nullish(),
});
/** A task assignment as a node receives it. */
export type TaskAssignment = z.infer<typeof TaskAssignmentSchema>;

/** `GET /tasks/pending`: an assignment, or `null` when there is no work. */
export const PollResponseSchema = TaskAssignmentSchema.nullable();

/** Node statuses a heartbeat may carry. */
export const NODE_STATUSES = ["idle", "busy", "offline", "error"] as const;
/** One of {@link NODE_STATUSES}. */
export type NodeStatus = (typeof NODE_STATUSES)[number];

/** Task statuses a node may report with `POST /status`. */
export const REPORTED_STATUSES = ["running", "analyzing", "success", "error"] as const;
/** One of {@link REPORTED_STATUSES}. */
export type ReportedStatus = (typeof REPORTED_STATUSES)[number];

/** One message of a Crush session, as `POST /logs` carries it. */
export const SessionMessageSchema = z.looseObject({
  id: z.string().optional(),
  role: z.string(),
  /** A JSON-encoded string of message parts. */
  content: z.string(),
  model: z.string().nullish(),
  provider: z.string().nullish(),
  created_at: z.number().int().nullish(),
  finished_at: z.number().int().nullish(),
});
/** A message of a session log. */
export type SessionMessage = z.infer<typeof SessionMessageSchema>;

/** A Crush session, the body of `POST /logs` under `session`. */
export const SessionLogSchema = z.looseObject({
  id: z.string().optional(),
  title: z.string().nullish(),
  prompt_tokens: z.number().nullish(),
  completion_tokens: z.number().nullish(),
  cost: z.number().nullish(),
  created_at: z.number().int().nullish(),
  updated_at: z.number().int().nullish(),
  messages: z.array(SessionMessageSchema).default([]),
});
/** A session log as uploaded by a node. */
export type SessionLog = z.input<typeof SessionLogSchema>;

/** The `{detail}` body of every error answer. */
export const ErrorBodySchema = z.object({ detail: z.string() });
