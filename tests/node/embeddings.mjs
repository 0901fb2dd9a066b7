// client.embeddings.create with openai-node's default encoding (it asks for base64 and decodes).
import { client, report, request, requestId } from "./common.mjs";

const { data, response } = await client.embeddings.create(request).withResponse();
report({ requestId: requestId(response), vectors: data.data.map((item) => Array.from(item.embedding)) });
