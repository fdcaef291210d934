// A TypeScript project using the packed @imagegen/client (tests/clients/test_node.py).
import { createClient, ImagegenError, liveUrl, verifyWebhook, type Generation, type JsonObject } from '@imagegen/client';

const client = createClient({ deadlineMs: 30_000 });
const meta: JsonObject = { campaign: 'winter', tags: ['a', 'b'], n: 2, nested: { ok: true } };
const created: Generation = await client.createGeneration({
  prompt: 'a red fox',
  aspectRatio: '16:9',
  meta,
});
const done = await client.waitGeneration(created.id, { timeoutMs: 60_000 });
let missing = '';
try {
  await client.getGeneration('01a20000-0000-7000-8000-000000000000');
} catch (error) {
  if (error instanceof ImagegenError) missing = `${error.codeName} ${error.reason}`;
}
// A finished generation cannot be cancelled; an unsigned webhook does not verify.
let cancel = '';
try {
  await client.cancelGeneration(created.id);
} catch (error) {
  if (error instanceof ImagegenError) cancel = `${error.codeName} ${error.reason}`;
}
const secret: string = await client.getWebhookSecret();
let forged = false;
try {
  verifyWebhook(secret, { 'webhook-id': 'msg_1', 'webhook-timestamp': '1', 'webhook-signature': 'v1,AAAA' }, '{}');
} catch {
  forged = true;
}
const width = done.outputImage?.width;
const updated = await client.updateGeneration(created.id, { meta: { campaign: 'spring' } });
const picture = await client.readImage(done.outputImage?.id ?? '');
const png = picture.data.subarray(1, 4).toString('latin1');
const live = liveUrl('http://cdn.example', 'default', 'heroes', 'a fox', { aspectRatio: '16:9' });
const result = { status: done.status, meta: done.meta, width, missing, updated: updated.meta, png, live, cancel, forged };
console.log(JSON.stringify(result));
client.close();
