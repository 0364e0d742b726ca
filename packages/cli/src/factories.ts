import { randomUUID } from "node:crypto";
import type { ResourceManager, Worker } from "@flotilla/core";
import type { WorkerFactories } from "@flotilla/http-adapter";

type Ctor = new (options: Record<string, unknown>) => Worker;

/**
 * Worker factories for the adapter's run-time registration routes, built from the worker
 * packages present in this build. A route whose package is missing answers 501.
 *
 * @example
 * ```ts
 * const { factories } = await buildWorkerFactories(resources);
 * createFlotillaApp({ orchestrator, auth, workerFactories: factories });
 * ```
 */
export async function buildWorkerFactories(resources?: ResourceManager): Promise<{
  factories: WorkerFactories;
  notes: string[];
}> {
  const factories: WorkerFactories = {};
  const notes: string[] = [];
  const llm = (await import("@flotilla/workers-llm").catch(() => undefined)) as
    | Record<string, unknown>
    | undefined;
  if (llm?.OpenAIWorker) {
    factories.llmApi = (input) => {
      const worker = makeLlm(input);
      if (input.rate_limit_per_minute && resources) {
        resources.limiter.setLimits(`worker:${worker.id}`, `${input.rate_limit_per_minute}/min`);
      }
      if (input.cost_per_1k_tokens !== undefined && resources) {
        // USD per 1k tokens → per million, for input and output alike: the worker prices the
        // calls it reports with it, and budgets estimate with it before a call.
        const perMillion = input.cost_per_1k_tokens * 1000;
        resources.costModel.prices.set(worker.labels?.provider ?? worker.kind, input.model ?? "*", {
          input: perMillion,
          output: perMillion,
        });
      }
      return worker;
    };
    const makeLlm = (input: Parameters<NonNullable<WorkerFactories["llmApi"]>>[0]): Worker => {
      const id = input.worker_id ?? `${input.api_type}-${randomUUID().slice(0, 8)}`;
      const common: Record<string, unknown> = { id, apiKey: input.api_key };
      if (input.cost_per_1k_tokens !== undefined) {
        const perMillion = input.cost_per_1k_tokens * 1000;
        common.prices = { [input.model ?? "*"]: { input: perMillion, output: perMillion } };
      }
      if (input.base_url) common.baseURL = input.base_url;
      const type = input.api_type.toLowerCase();
      if (type === "openai") {
        return new (llm.OpenAIWorker as Ctor)({
          ...common,
          ...(input.model ? { defaultModel: input.model } : {}),
        });
      }
      if (type === "anthropic" && llm.AnthropicWorker) {
        return new (llm.AnthropicWorker as Ctor)({
          ...common,
          ...(input.model ? { defaultModel: input.model } : {}),
        });
      }
      const presets = (llm.OPENAI_COMPATIBLE_PRESETS ?? {}) as Record<string, unknown>;
      if (llm.OpenAICompatibleWorker && (type in presets || input.base_url)) {
        if (!input.model) throw new Error(`body.model: required for api_type "${input.api_type}"`);
        return new (llm.OpenAICompatibleWorker as Ctor)({
          ...common,
          ...(type in presets ? { preset: type } : {}),
          defaultModel: input.model,
        });
      }
      throw new Error(
        `body.api_type: unknown "${input.api_type}": expected openai, anthropic, ${Object.keys(presets).join(", ")}, or any name with base_url`,
      );
    };
  } else
    notes.push(
      "LLM API registration unavailable: @flotilla/workers-llm has no OpenAIWorker in this build",
    );
  const remote = (await import("@flotilla/workers-remote").catch(() => undefined)) as
    | Record<string, unknown>
    | undefined;
  const Remote = (remote?.RemoteWorker ?? remote?.PushRemoteWorker) as Ctor | undefined;
  if (Remote) {
    factories.remote = (input) => {
      const opts: Record<string, unknown> = {
        id: input.worker_id ?? `remote-${randomUUID().slice(0, 8)}`,
        url: input.remote_url,
        remoteUrl: input.remote_url,
      };
      if (input.auth_token) opts.authToken = input.auth_token;
      if (input.capabilities) opts.capabilities = input.capabilities;
      if (input.task_types) opts.taskTypes = input.task_types;
      if (input.max_concurrent_tasks) opts.maxConcurrency = input.max_concurrent_tasks;
      return new Remote(opts);
    };
  } else
    notes.push(
      "remote worker registration unavailable: @flotilla/workers-remote has no push-mode worker in this build",
    );
  return { factories, notes };
}
