// Reads /generate_stream with fetch + getReader, as a browser client would, and prints JSON:
// the concatenated token texts, the final generated_text, and the token count.
// Usage: node stream_client.mjs <base url> <request body as JSON>
const [url, body] = process.argv.slice(2);
const response = await fetch(`${url}/generate_stream`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body,
});
if (!response.ok) throw new Error(`HTTP ${response.status}`);
const reader = response.body.getReader();
const decoder = new TextDecoder();
let buffered = "";
let concatenated = "";
let generatedText = null;
let tokens = 0;
for (;;) {
  const { value, done } = await reader.read();
  if (done) break;
  buffered += decoder.decode(value, { stream: true });
  let end;
  while ((end = buffered.indexOf("\n\n")) !== -1) {
    const event = buffered.slice(0, end);
    buffered = buffered.slice(end + 2);
    for (const line of event.split("\n")) {
      if (!line.startsWith("data:")) continue;
      const payload = JSON.parse(line.slice(5));
      if (payload.error) throw new Error(payload.error);
      tokens += 1;
      if (!payload.token.special) concatenated += payload.token.text;
      if (payload.generated_text !== null) generatedText = payload.generated_text;
    }
  }
}
console.log(JSON.stringify({ concatenated, generatedText, tokens }));
