// The Node client against a real imagegen server (`python -m server serve`) on a free port.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ImagegenError, createClient, status, verifyWebhook } from '../src/index.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const PYTHON = process.env.IMAGEGEN_PYTHON || join(REPO, '.venv/bin/python');

function freePort() {
  // Port 0 would leave the port unknown to us: take one from the OS, then free it.
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

class Server {
  constructor(port, dataDir) {
    this.port = port;
    this.dataDir = dataDir;
    this.output = '';
  }

  start() {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMAGEGEN_')));
    Object.assign(env, {
      IMAGEGEN_LOG_LEVEL: 'warning',
      IMAGEGEN_GENERATOR_DELAY_SECONDS: '1',
      IMAGEGEN_LEASE_SECONDS: '1.5', // a killed server's run is taken up again soon
      IMAGEGEN_POLL_INTERVAL_SECONDS: '0.1',
      IMAGEGEN_WEBHOOK_ALLOW_PRIVATE_ADDRESSES: 'true', // the test's receiver is on 127.0.0.1
    });
    const args = ['-m', 'server', 'serve', '--grpc-port', String(this.port), '--no-http', '--data-dir', this.dataDir];
    this.process = spawn(PYTHON, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk) => { this.output = (this.output + chunk).slice(-20_000); };
    this.process.stdout.on('data', keep);
    this.process.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.process.once('exit', resolve));
  }

  async stop(signal = 'SIGTERM') {
    if (!this.process || this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill(signal);
    await this.exited;
  }

  async apiKey() {
    const file = join(this.dataDir, 'dev-api-key');
    for (let i = 0; i < 600 && !existsSync(file); i += 1) {
      assert.equal(this.process.exitCode, null, `the server exited:\n${this.output}`);
      await sleep(50);
    }
    return readFileSync(file, 'utf8').trim();
  }
}

let server;
let client;
let dataDir;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'imagegen-node-'));
  server = new Server(await freePort(), join(dataDir, 'data'));
  server.start();
  const apiKey = await server.apiKey();
  client = createClient({ address: `127.0.0.1:${server.port}`, apiKey, retry: { maxBackoffMs: 500 } });
  let health;
  for (let i = 0; i < 200 && health !== 'SERVING'; i += 1) {
    health = await client.checkHealth().catch((error) => error.codeName);
    if (health !== 'SERVING') await sleep(50);
  }
  assert.equal(health, 'SERVING', server.output);
});

after(async () => {
  client?.close();
  await server?.stop('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
});

test('create, watch until SUCCESS, get, list', async () => {
  const created = await client.createGeneration({ prompt: 'a red fox in snow', aspectRatio: '16:9', meta: { campaign: 'winter', n: 2 } });
  assert.equal(created.status, 'GENERATION_STATUS_PENDING');
  assert.deepEqual(created.meta, { campaign: 'winter', n: 2 });

  const events = [];
  for await (const event of client.watchGeneration(created.id)) events.push(event);
  const revisions = events.map((e) => e.revision);
  assert.deepEqual(revisions, [...new Set(revisions)].sort((a, b) => a - b), 'revisions strictly increase');
  const last = events.at(-1).generation;
  assert.equal(last.status, 'GENERATION_STATUS_SUCCESS');
  assert.equal(last.outputImage.width, 1792);
  assert.equal(last.outputImage.height, 1008);

  const fetched = await client.getGeneration(created.id);
  assert.equal(fetched.revision, events.at(-1).revision);
  const page = await client.listGenerations({ status: 'success' });
  assert.ok(page.generations.some((g) => g.id === created.id));
  assert.ok(page.total >= 1);
});

test('model, seed, negative prompt and output format travel both ways', async () => {
  const created = await client.createGeneration({ prompt: 'a kite', model: 'local', seed: 31, negativePrompt: 'rain', outputFormat: 'webp' });
  assert.equal(created.model, 'local');
  assert.equal(created.seed, 31);
  assert.equal(created.negativePrompt, 'rain');
  assert.equal(created.outputFormat, 'webp');
  let last;
  for await (const event of client.watchGeneration(created.id)) last = event.generation;
  assert.equal(last.status, 'GENERATION_STATUS_SUCCESS');
  assert.equal(last.outputImage.mimeType, 'image/webp');
  await assert.rejects(client.createGeneration({ prompt: 'a kite', model: 'openai/gpt-image-1' }), { codeName: 'FAILED_PRECONDITION', reason: 'MODEL_UNAVAILABLE' });
});

test('plain objects for meta on update and upload; image bytes back', async () => {
  const created = await client.createGeneration({ prompt: 'a lighthouse', meta: { a: 1 } });
  const updated = await client.updateGeneration(created.id, { meta: { campaign: 'spring', tags: ['x', 'y'], nested: { ok: true } } });
  assert.deepEqual(updated.meta, { campaign: 'spring', tags: ['x', 'y'], nested: { ok: true } });
  assert.equal(updated.prompt, 'a lighthouse'); // only meta was in the mask
  assert.deepEqual((await client.getGeneration(created.id)).meta, updated.meta);

  const logo = readFileSync(join(REPO, 'samples/logo.png'));
  const image = await client.uploadImage({ content: logo, alias: '@node-logo', meta: { by: 'node' } });
  assert.equal(image.source, 'IMAGE_SOURCE_UPLOADED');
  assert.deepEqual(image.meta, { by: 'node' });
  assert.equal(image.mimeType, 'image/png');
  const back = await client.readImage('@node-logo');
  assert.equal(back.mimeType, 'image/png');
  assert.ok(back.data.equals(logo));
  await assert.rejects(client.readImage('@no-such-alias'), (error) => error instanceof ImagegenError && error.code === status.NOT_FOUND);
});

test('bad input is INVALID_ARGUMENT with its field violations', async () => {
  await assert.rejects(client.createGeneration({ prompt: '' }), (error) => {
    assert.ok(error instanceof ImagegenError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.reason, 'VALIDATION_ERROR');
    assert.deepEqual(error.fieldViolations.map((v) => v.field), ['prompt']);
    assert.ok(error.correlationId, 'the x-request-id of the call');
    assert.match(error.message, /^INVALID_ARGUMENT VALIDATION_ERROR: /);
    return true;
  });
  await assert.rejects(client.getGeneration('01a20000-0000-7000-8000-000000000000'), { codeName: 'NOT_FOUND', reason: 'GENERATION_NOT_FOUND' });
  const stranger = createClient({ address: client.address, apiKey: 'igk_not_a_key' });
  await assert.rejects(stranger.listGenerations(), { code: status.UNAUTHENTICATED });
  stranger.close();
});

test('the example script generates an image', async () => {
  const apiKey = await server.apiKey();
  const example = spawn(process.execPath, ['examples/generate.mjs', 'a lighthouse at dusk', '3:2'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, IMAGEGEN_ADDRESS: client.address, IMAGEGEN_API_KEY: apiKey },
  });
  let output = '';
  example.stdout.on('data', (chunk) => { output += chunk; });
  example.stderr.on('data', (chunk) => { output += chunk; });
  const code = await new Promise((resolve) => example.once('exit', resolve));
  assert.equal(code, 0, output);
  assert.match(output, /SUCCESS/);
  assert.match(output, /image \S+ 1536x1024 /);
});

test('a watch resumes after the server is killed and restarted', async () => {
  const created = await client.createGeneration({ prompt: 'a storm over the harbour' });
  const events = [];
  let restarted = false;
  for await (const event of client.watchGeneration(created.id)) {
    events.push(event);
    if (!restarted && event.generation.status === 'GENERATION_STATUS_PROCESSING') {
      await server.stop('SIGKILL'); // mid-run: the stream breaks, the lease is left to expire
      server.start();
      restarted = true;
    }
  }
  assert.ok(restarted);
  const revisions = events.map((e) => e.revision);
  assert.deepEqual(revisions, [...new Set(revisions)].sort((a, b) => a - b), `no repeats: ${revisions}`);
  const rest = [];
  for await (const event of client.watchGeneration(created.id, { sinceRevision: revisions[0] })) rest.push(event.revision);
  assert.deepEqual(revisions.slice(1), rest, 'no state lost');
  assert.equal(events.at(-1).generation.status, 'GENERATION_STATUS_SUCCESS');
  assert.equal(events.at(-1).generation.attempt, 2, 'the run was taken up again after the kill');
});

test('cancel, and a webhook verified with verifyWebhook', async () => {
  const received = [];
  const receiver = createHttpServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      received.push({ headers: request.headers, body: Buffer.concat(chunks) });
      response.end('ok');
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${receiver.address().port}/hooks`;
    const created = await client.createGeneration({ prompt: 'stop me', runTimeoutMs: 60_000, webhook: { url } });
    assert.equal(created.webhookUrl, url);
    const cancelled = await client.cancelGeneration(created.id);
    assert.equal(cancelled.status, 'GENERATION_STATUS_CANCELLED');
    await assert.rejects(client.cancelGeneration(created.id), { codeName: 'FAILED_PRECONDITION', reason: 'GENERATION_ALREADY_FINISHED' });
    for (let i = 0; i < 200 && received.length === 0; i += 1) await sleep(50);
    assert.equal(received.length, 1);
    const secret = await client.getWebhookSecret();
    const payload = verifyWebhook(secret, received[0].headers, received[0].body);
    assert.equal(payload.type, 'generation.completed');
    assert.equal(payload.data.status, 'cancelled');
    assert.throws(() => verifyWebhook(secret, received[0].headers, received[0].body.toString().replace('cancelled', 'success')));
  } finally {
    receiver.close();
  }
});
