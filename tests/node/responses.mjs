// client.responses.create, whole or (with "stream": true in the request) as events.
import { client, report, request, requestId } from "./common.mjs";

const { data, response } = await client.responses.create(request).withResponse();
if (request.stream) {
  let text = "";
  const types = [];
  for await (const event of data) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  report({ requestId: requestId(response), text, types });
} else {
  report({ requestId: requestId(response), text: data.output_text, status: data.status });
}
