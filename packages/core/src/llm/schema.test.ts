import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import {
  contentText,
  estimateInputTokens,
  hasImages,
  LlmRequestSchema,
  parseLlmRequest,
} from "./schema.js";

function validationMessage(payload: unknown): string {
  try {
    parseLlmRequest(payload);
  } catch (err) {
    expect(err).toBeInstanceOf(FlotillaError);
    expect((err as FlotillaError).code).toBe("VALIDATION");
    return (err as FlotillaError).message;
  }
  throw new Error("expected a VALIDATION error");
}

describe("llm_request payload", () => {
  it("appends the prompt after the messages and defaults content to an empty string", () => {
    const req = parseLlmRequest({
      messages: [{ role: "assistant", toolCalls: [{ id: "c1", name: "f", arguments: {} }] }],
      prompt: "next",
    });
    expect(req.messages).toEqual([
      { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "f", arguments: {} }] },
      { role: "user", content: "next" },
    ]);
  });

  it("names each invalid field, listing every issue", () => {
    expect(validationMessage({})).toBe(
      "invalid llm_request: payload.messages: at least one message is required (or a prompt)",
    );
    expect(
      validationMessage({ prompt: "x", tools: [{ name: "a" }], toolChoice: { name: "b" } }),
    ).toContain("payload.toolChoice.name: names a tool that is not in tools: b");
    expect(validationMessage({ messages: [{ role: "tool", content: "r" }] })).toContain(
      'payload.messages[0].toolCallId: required for role "tool"',
    );
    const many = validationMessage({
      prompt: "",
      temperature: 3,
      topP: 0,
      maxTokens: 1.5,
      stop: "",
      stream: "yes",
    });
    expect(many.split("; ")).toHaveLength(6);
  });

  it("wants exactly one of url or data on an image part", () => {
    const image = (part: object) =>
      LlmRequestSchema.safeParse({
        messages: [{ role: "user", content: [{ type: "image", ...part }] }],
      }).success;
    expect(image({ url: "https://x/y.png" })).toBe(true);
    expect(image({ data: "aGk=", mediaType: "image/png" })).toBe(true);
    expect(image({})).toBe(false);
    expect(image({ url: "https://x/y.png", data: "aGk=" })).toBe(false);
  });

  it("reads text, images and a token estimate from a request", () => {
    const req = parseLlmRequest({
      system: "abcd",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "hello " },
            { type: "image", url: "https://x/y.png" },
            { type: "text", text: "world" },
          ],
        },
      ],
    });
    expect(contentText(req.messages[0]?.content ?? "")).toBe("hello world");
    expect(hasImages(req)).toBe(true);
    expect(hasImages(parseLlmRequest({ prompt: "hi" }))).toBe(false);
    // 4 (system) + 11 (text) + 4 (per message) = 19 characters -> 5 tokens
    expect(estimateInputTokens(req)).toBe(5);
  });
});
