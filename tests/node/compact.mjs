// client.responses.compact, then client.responses.inputTokens.count of what it kept.
import { client, report, request, requestId } from "./common.mjs";

const compacted = await client.responses.compact(request).withResponse();
const kept = compacted.data.output;
const counted = await client.responses.inputTokens.count({ model: request.model, input: kept }).withResponse();
report({
  compactId: requestId(compacted.response),
  countId: requestId(counted.response),
  types: kept.map((item) => item.type),
  inputTokens: counted.data.input_tokens,
});
