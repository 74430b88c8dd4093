// Talking to the server: every request carries the API key when one is given, and any error becomes an
// ApiError with the server's own message.
import { ApiError, ui } from "./ui.js";

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// The error envelope's message when there is one; something readable when there is not (a proxy's page).
async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) ui.auth.open = true;
  if (response.status === 429) message += " — try again in a moment";
  return new ApiError(message, response.status);
}

export async function request(path, body, signal) {
  let response;
  try {
    response = await fetch(path, body === undefined ? { headers: headers(), signal }
      : { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`Could not reach the server (${error.message}).`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// Server-sent events of a POST: fetch + a stream reader (EventSource only does GET). Yields each event's data.
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

