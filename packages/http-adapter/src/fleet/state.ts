import type { Store } from "@flotilla/core";

/** Collections of the store's key-value space that the fleet routes use. */
export const COLLECTIONS = {
  nodes: "fleet.nodes",
  keys: "fleet.keys",
  keyIndex: "fleet.key_index",
  audit: "fleet.audit",
  files: "fleet.files",
  fileData: "fleet.file_data",
  fileChunks: "fleet.file_chunks",
  logs: "fleet.logs",
  logIndex: "fleet.log_index",
  tasks: "fleet.tasks",
  schedules: "fleet.schedules",
} as const;

/** Heartbeat statuses of a node. */
export type NodeState = "idle" | "busy" | "offline" | "error";

/** A registered node as stored. */
export interface NodeRecord {
  id: string;
  name: string;
  hostname: string;
  os_type: string;
  capabilities: string[];
  labels: Record<string, string>;
  resources: Record<string, unknown>;
  task_types: string[];
  slots: number;
  status: NodeState;
  /** The task the node last said it is busy with (its heartbeat). */
  current_task_id: string | null;
  key_id: string;
  registered_at: number;
  last_registered_at: number;
  registrations: number;
  last_heartbeat_at: number | null;
  last_seen_at: number;
  /**
   * When the node, offline for `nodeExpiryMs`, was hidden from lists and its tasks requeued;
   * cleared when it shows up again (its key stays valid throughout).
   */
  expired_at?: number | null;
}

/** Kinds of API keys. */
export type KeyKind = "admin" | "scoped" | "node";

/** An API key as stored: only its hash, never the secret. */
export interface KeyRecord {
  id: string;
  name: string;
  kind: KeyKind;
  /** Lowercase hex SHA-256 of the secret. */
  hash: string;
  /** The first characters of the secret, to recognise it. */
  prefix: string;
  scopes: string[];
  /** Name globs a scoped key may target (task creation must stay inside them). */
  allowed_targets: string[] | null;
  node_id: string | null;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  rotated_at: number | null;
  last_used_at: number | null;
  use_count: number;
  /** Former secrets still accepted until `valid_until` (rotation and re-registration grace). */
  previous: Array<{ hash: string; valid_until: number }>;
}

/** Where a key hash points. */
export interface KeyIndexEntry {
  key_id: string;
  /** Set for a former secret: accepted until then. */
  valid_until: number | null;
}

/** An audit line. */
export interface AuditEntry {
  id: string;
  at: number;
  action: string;
  key_id: string | null;
  key_name: string | null;
  actor: string | null;
  source: string | null;
  detail: string | null;
}

/** An uploaded file's metadata. */
export interface FileRecord {
  filename: string;
  original_name: string;
  checksum: string;
  size: number;
  content_type: string | null;
  uploaded_at: number;
  uploaded_by: string | null;
  /** Where the bytes are: the store (base64 in `fleet.file_data`) or a file in `uploadDir`. */
  location: "store" | "disk";
  /** In the store, in this many chunks (`fleet.file_chunks`); absent: one value (older uploads). */
  chunks?: number;
}

/** A file attached to a task. */
export interface TaskFileRef {
  /** The name the node sees (`files[]`) and asks for in `/files/{name}`. */
  name: string;
  filename: string;
  checksum: string;
  size: number;
}

/** Fleet-side state of a task, beside the orchestrator's record. */
export interface FleetTaskState {
  task_id: string;
  message: string | null;
  progress: number | null;
  session_id: string | null;
  last_status: string | null;
  last_report_at: number | null;
  last_node_id: string | null;
  log_count: number;
  created_by: string | null;
  schedule_id: string | null;
}

/** A recurring task definition. */
export interface ScheduleRecord {
  id: string;
  cron: string;
  timezone: string | null;
  /** The task creation body, re-submitted at every occurrence. */
  template: Record<string, unknown>;
  created_at: number;
  created_by: string | null;
  /** The creator's key as tasks record it (`apiKey` budgets count each occurrence by it). */
  api_key?: string | null;
  next_run_at: number | null;
  last_task_id: string | null;
  active: boolean;
}

/** Orders audit lines written in the same millisecond. */
let auditSeq = 0;

/** Typed access to the fleet's collections. */
export class FleetState {
  constructor(readonly store: Store) {}

  getNode(id: string): Promise<NodeRecord | undefined> {
    return this.store.kvGet<NodeRecord>(COLLECTIONS.nodes, id);
  }
  putNode(node: NodeRecord): Promise<void> {
    return this.store.kvPut(COLLECTIONS.nodes, node.id, node);
  }
  deleteNode(id: string): Promise<boolean> {
    return this.store.kvDelete(COLLECTIONS.nodes, id);
  }
  async listNodes(): Promise<NodeRecord[]> {
    const rows = await this.store.kvList<NodeRecord>(COLLECTIONS.nodes);
    return rows.map((r) => r.value).sort((a, b) => a.registered_at - b.registered_at);
  }
  async findNodeByName(name: string): Promise<NodeRecord | undefined> {
    return (await this.listNodes()).find((n) => n.name === name);
  }

  getKey(id: string): Promise<KeyRecord | undefined> {
    return this.store.kvGet<KeyRecord>(COLLECTIONS.keys, id);
  }
  putKey(key: KeyRecord): Promise<void> {
    return this.store.kvPut(COLLECTIONS.keys, key.id, key);
  }
  deleteKey(id: string): Promise<boolean> {
    return this.store.kvDelete(COLLECTIONS.keys, id);
  }
  async listKeys(): Promise<KeyRecord[]> {
    const rows = await this.store.kvList<KeyRecord>(COLLECTIONS.keys);
    return rows.map((r) => r.value).sort((a, b) => a.created_at - b.created_at);
  }
  getKeyIndex(hash: string): Promise<KeyIndexEntry | undefined> {
    return this.store.kvGet<KeyIndexEntry>(COLLECTIONS.keyIndex, hash);
  }
  putKeyIndex(hash: string, entry: KeyIndexEntry): Promise<void> {
    return this.store.kvPut(COLLECTIONS.keyIndex, hash, entry);
  }
  deleteKeyIndex(hash: string): Promise<boolean> {
    return this.store.kvDelete(COLLECTIONS.keyIndex, hash);
  }

  putAudit(entry: AuditEntry): Promise<void> {
    auditSeq += 1;
    const key = `${String(entry.at).padStart(15, "0")}-${String(auditSeq).padStart(12, "0")}-${entry.id}`;
    return this.store.kvPut(COLLECTIONS.audit, key, entry);
  }
  async listAudit(): Promise<AuditEntry[]> {
    const rows = await this.store.kvList<AuditEntry>(COLLECTIONS.audit);
    return rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map((r) => r.value);
  }

  getFile(filename: string): Promise<FileRecord | undefined> {
    return this.store.kvGet<FileRecord>(COLLECTIONS.files, filename);
  }
  putFile(file: FileRecord): Promise<void> {
    return this.store.kvPut(COLLECTIONS.files, file.filename, file);
  }
  getFileData(filename: string): Promise<string | undefined> {
    return this.store.kvGet<string>(COLLECTIONS.fileData, filename);
  }
  putFileData(filename: string, base64: string): Promise<void> {
    return this.store.kvPut(COLLECTIONS.fileData, filename, base64);
  }
  /** One chunk of a file stored in chunks (base64). */
  getFileChunk(filename: string, index: number): Promise<string | undefined> {
    return this.store.kvGet<string>(COLLECTIONS.fileChunks, `${filename}/${index}`);
  }
  putFileChunk(filename: string, index: number, base64: string): Promise<void> {
    return this.store.kvPut(COLLECTIONS.fileChunks, `${filename}/${index}`, base64);
  }
  deleteFileChunk(filename: string, index: number): Promise<boolean> {
    return this.store.kvDelete(COLLECTIONS.fileChunks, `${filename}/${index}`);
  }

  getTaskState(id: string): Promise<FleetTaskState | undefined> {
    return this.store.kvGet<FleetTaskState>(COLLECTIONS.tasks, id);
  }
  putTaskState(state: FleetTaskState): Promise<void> {
    return this.store.kvPut(COLLECTIONS.tasks, state.task_id, state);
  }
  deleteTaskState(id: string): Promise<boolean> {
    return this.store.kvDelete(COLLECTIONS.tasks, id);
  }
  async listTaskStates(): Promise<FleetTaskState[]> {
    return (await this.store.kvList<FleetTaskState>(COLLECTIONS.tasks)).map((r) => r.value);
  }

  getLogIndex(taskId: string): Promise<string[] | undefined> {
    return this.store.kvGet<string[]>(COLLECTIONS.logIndex, taskId);
  }
  async appendLog(taskId: string, entry: unknown): Promise<number> {
    const index = (await this.getLogIndex(taskId)) ?? [];
    const key = `${taskId}:${index.length}`;
    await this.store.kvPut(COLLECTIONS.logs, key, entry);
    index.push(key);
    await this.store.kvPut(COLLECTIONS.logIndex, taskId, index);
    return index.length;
  }
  async readLogs(taskId: string): Promise<unknown[]> {
    const index = (await this.getLogIndex(taskId)) ?? [];
    const out: unknown[] = [];
    for (const key of index) {
      const entry = await this.store.kvGet(COLLECTIONS.logs, key);
      if (entry !== undefined) out.push(entry);
    }
    return out;
  }
  async deleteLogs(taskId: string): Promise<void> {
    const index = (await this.getLogIndex(taskId)) ?? [];
    for (const key of index) await this.store.kvDelete(COLLECTIONS.logs, key);
    await this.store.kvDelete(COLLECTIONS.logIndex, taskId);
  }

  /** Deletes audit lines written before `before` (ms); resolves how many. */
  async pruneAudit(before: number): Promise<number> {
    let n = 0;
    for (const { key, value } of await this.store.kvList<AuditEntry>(COLLECTIONS.audit)) {
      if (value.at < before && (await this.store.kvDelete(COLLECTIONS.audit, key))) n++;
    }
    return n;
  }

  getSchedule(id: string): Promise<ScheduleRecord | undefined> {
    return this.store.kvGet<ScheduleRecord>(COLLECTIONS.schedules, id);
  }
  putSchedule(s: ScheduleRecord): Promise<void> {
    return this.store.kvPut(COLLECTIONS.schedules, s.id, s);
  }
  async listSchedules(): Promise<ScheduleRecord[]> {
    return (await this.store.kvList<ScheduleRecord>(COLLECTIONS.schedules)).map((r) => r.value);
  }
}
