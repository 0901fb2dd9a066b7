// What every script shares: the client pointed at the proxy, the test's request, the report.
//
// A script is run as `node NAME.mjs '<JSON request>'` with PROXY_V1 set to the proxy's /v1 URL;
// it makes its call with openai-node and prints one JSON object on stdout for the test to check.
import OpenAI from "openai";

export const client = new OpenAI({
  baseURL: process.env.PROXY_V1,
  apiKey: process.env.PROXY_API_KEY || "anything",
  maxRetries: 0,
  timeout: 20_000,
});

export const request = JSON.parse(process.argv[2] || "{}");

export function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

export function requestId(response) {
  return response.headers.get("x-study-request-id");
}
