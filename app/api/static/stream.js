// Server-Sent Events read with fetch and a ReadableStream instead of EventSource: EventSource
// cannot send an Authorization header, and the token must not go into the URL. This reader sends
// Authorization and Last-Event-ID itself and reconnects the way EventSource would (the server's
// `retry:` delay, longer after repeated failures).

import { ApiError, openEvents } from "./api.js";

const MAX_DELAY_MS = 30_000;

// Yields {id, event, data} per the SSE format: lines end in CRLF, LF or CR; a blank line dispatches;
// the id stays until an `id:` line changes it (an empty one clears it).
export async function* parse(body, onRetry) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let event = { event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A CR at the very end may be the first half of a CRLF: that line ends with the next chunk.
      const end = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, end).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(end);
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) yield { id, event: event.event, data: event.data.join("\n") };
          event = { event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") event.data.push(text);
        else if (field === "event") event.event = text;
        else if (field === "id") id = text;
        else if (field === "retry" && /^\d+$/.test(text)) onRetry(Number(text));
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Follows a task until it ends: onTask(task, kind) per event (kind "item": a playlist's item whose
// status changed); onState("live" | "reconnecting" |
// "ended" | "refused"). Returns a function that stops following.
export function follow(taskId, { onTask, onState }) {
  const controller = new AbortController();
  let lastEventId = null;
  let delay = 2000;
  let failures = 0;

  async function run() {
    while (!controller.signal.aborted) {
      try {
        const body = await openEvents(taskId, lastEventId, controller.signal);
        onState("live");
        for await (const message of parse(body, (ms) => (delay = ms))) {
          failures = 0;
          lastEventId = message.id;
          const task = JSON.parse(message.data);
          onTask(task, message.event);
          // The API sets completed_at when a task ends, whatever the outcome: the stream is done.
          // (An `item` event is one of a playlist's items, not the followed task.)
          if (message.event !== "item" && task.completed_at) {
            onState("ended");
            return;
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        // Gone (deleted) or refused (token): reconnecting would not help.
        if (error instanceof ApiError && (error.status === 404 || error.status === 401)) {
          onState("refused");
          return;
        }
      }
      // The stream ended before the task did (service restarted, connection cut): resume.
      failures += 1;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay * 2 ** (failures - 1), MAX_DELAY_MS)));
    }
  }

  run();
  return () => controller.abort();
}
