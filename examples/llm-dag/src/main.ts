/**
 * A small LLM pipeline as a DAG: draft → critique → summary.
 *
 * Each step is an `llm_request` task; later steps read earlier outputs through
 * `{{task-id.text}}` templates. The model is a local OpenAI-shaped test server, so the
 * example runs anywhere without an API key; point `baseURL`/`apiKey` at a real endpoint to
 * run it for real.
 */
import { Orchestrator } from "@flotilla/core";
import { type RecordedRequest, startOpenAIServer } from "@flotilla/testing";
import { type LlmResponse, OpenAIWorker } from "@flotilla/workers-llm";

const TOPIC = "why a job orchestrator for AI agents needs rate limits";

/** The stand-in model: answers each step from what it was sent, like a real model would. */
function fakeModel(req: RecordedRequest) {
  const messages = req.body.messages as { role: string; content: string }[];
  const last = messages.at(-1)?.content ?? "";
  if (last.startsWith("Write a two-sentence draft")) {
    return {
      text: "Agents fire many model calls at once. Without rate limits they hit provider quotas and fail together.",
      usage: { inputTokens: 40, outputTokens: 22 },
    };
  }
  if (last.startsWith("Critique this draft")) {
    const draft = last.split("\n\n")[1] ?? "";
    return {
      text: `The draft ("${draft.slice(0, 30)}…") is clear, but it should say that limits also keep costs predictable.`,
      usage: { inputTokens: 60, outputTokens: 25 },
    };
  }
  if (last.startsWith("Summarize")) {
    return {
      text: "Rate limits keep agent swarms within provider quotas and make costs predictable.",
      usage: { inputTokens: 120, outputTokens: 15 },
    };
  }
  return { error: { status: 400, message: `unexpected prompt: ${last.slice(0, 40)}` } };
}

async function main(): Promise<number> {
  await using server = await startOpenAIServer({
    models: ["gpt-4o-mini"],
    defaultReply: fakeModel,
  });
  const orchestrator = new Orchestrator();
  await orchestrator.start();
  try {
    await orchestrator.register(
      new OpenAIWorker({
        id: "openai",
        apiKey: "local-test-key",
        baseURL: server.baseURL,
        defaultModel: "gpt-4o-mini",
      }),
    );

    const [draft, critique, summary] = await orchestrator.submitBatch([
      {
        id: "draft",
        type: "llm_request",
        payload: {
          system: "You are a concise technical writer.",
          prompt: `Write a two-sentence draft about ${TOPIC}.`,
          maxTokens: 120,
          stream: true,
        },
      },
      {
        id: "critique",
        type: "llm_request",
        dependsOn: ["draft"],
        payload: {
          prompt: "Critique this draft in one sentence:\n\n{{draft.text}}",
          maxTokens: 80,
        },
      },
      {
        id: "summary",
        type: "llm_request",
        dependsOn: ["draft", "critique"],
        payload: {
          prompt:
            "Summarize in one line, taking the critique into account.\n\nDraft: {{draft.text}}\n\nCritique: {{critique.text}}",
          maxTokens: 60,
        },
        retry: { maxAttempts: 3, initialDelayMs: 100 },
      },
    ]);
    if (!draft || !critique || !summary) throw new Error("submitBatch returned fewer handles");

    process.stdout.write("draft (streamed): ");
    for await (const p of draft.progress()) {
      const data = p.data as { type?: string; text?: string };
      if (data.type === "token") process.stdout.write(data.text ?? "");
    }
    process.stdout.write("\n");

    const results = await Promise.all([draft.result(), critique.result(), summary.result()]);
    let totalCost = 0;
    let totalTokens = 0;
    for (const r of results) {
      const out = r.output as LlmResponse | undefined;
      console.log(`\n[${r.taskId}] ${r.status} on ${r.workerId ?? "-"}`);
      if (out) console.log(`  ${out.text}`);
      if (r.error) console.log(`  error: ${r.error.message}`);
      console.log(
        `  tokens ${r.usage?.inputTokens ?? 0} in / ${r.usage?.outputTokens ?? 0} out, $${(r.usage?.costUsd ?? 0).toFixed(6)}`,
      );
      totalCost += r.usage?.costUsd ?? 0;
      totalTokens += r.usage?.totalTokens ?? 0;
    }
    console.log(`\ntotal: ${totalTokens} tokens, $${totalCost.toFixed(6)}`);

    // Check the outcome: every step succeeded and each one was sent its dependencies' outputs.
    const problems: string[] = [];
    for (const r of results) if (r.status !== "succeeded") problems.push(`${r.taskId} ${r.status}`);
    const sent = server
      .completionRequests()
      .map((r) => (r.body.messages as { content: string }[]).at(-1)?.content ?? "");
    const draftText = (results[0]?.output as LlmResponse | undefined)?.text ?? "<none>";
    const critiqueText = (results[1]?.output as LlmResponse | undefined)?.text ?? "<none>";
    if (!sent.some((s) => s.startsWith("Critique") && s.includes(draftText)))
      problems.push("critique did not get the draft");
    if (
      !sent.some(
        (s) => s.startsWith("Summarize") && s.includes(draftText) && s.includes(critiqueText),
      )
    ) {
      problems.push("summary did not get the draft and the critique");
    }
    const expectedCost = (220 * 0.15 + 62 * 0.6) / 1e6;
    if (Math.abs(totalCost - expectedCost) > 1e-9)
      problems.push(`cost ${totalCost} != ${expectedCost}`);
    if (problems.length > 0) {
      console.error(`\nwrong outcome: ${problems.join("; ")}`);
      return 1;
    }
    console.log("\nok: draft → critique → summary ran in order with templated inputs");
    return 0;
  } finally {
    await orchestrator.stop({ mode: "abort" });
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
