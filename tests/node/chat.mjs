// client.chat.completions.create, whole or (with "stream": true in the request) as chunks.
import { client, report, request, requestId } from "./common.mjs";

const { data, response } = await client.chat.completions.create(request).withResponse();
if (request.stream) {
  let text = "";
  let chunks = 0;
  for await (const chunk of data) {
    chunks += 1;
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  report({ requestId: requestId(response), text, chunks });
} else {
  report({ requestId: requestId(response), text: data.choices[0].message.content, usage: data.usage });
}
