// The imagegen Node client: GenerationService over @grpc/grpc-js, with typed errors,
// retries of safe calls, and a watch that resumes after a dropped stream.
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { ImagegenError, fromServiceError } from './errors.js';

export { ImagegenError } from './errors.js';
export const status = grpc.status;

// The contract: a published package carries its own copy in proto/ (npm pack's
// prepack bundles protos/imagegen and protos/google from the repository, beside the
// health check proto); in the repository the copy is absent and protos/ is read.
const OWN_PROTOS = fileURLToPath(new URL('../proto', import.meta.url));
const REPO_PROTOS = fileURLToPath(new URL('../../../protos', import.meta.url));
const LOADER_OPTIONS = {
  keepCase: false, // fields in camelCase, as in the REST/JSON form of the API
  longs: Number, // revisions and counts stay far below 2^53
  enums: String, // 'GENERATION_STATUS_SUCCESS'
  defaults: true,
  oneofs: true,
  includeDirs: [OWN_PROTOS, REPO_PROTOS],
};
const definition = protoLoader.loadSync(
  ['imagegen/v1/generation.proto', 'imagegen/v1/image.proto', 'imagegen/v1/flow.proto', 'imagegen/v1/admin.proto', 'imagegen/v1/project.proto', 'grpc/health/v1/health.proto'],
  LOADER_OPTIONS,
);
const loaded = grpc.loadPackageDefinition(definition);
const v1 = loaded.imagegen.v1;

export const DEFAULT_ADDRESS = '127.0.0.1:50051';
const TRANSIENT = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED]);
const TERMINAL = new Set(['GENERATION_STATUS_SUCCESS', 'GENERATION_STATUS_FAILED', 'GENERATION_STATUS_CANCELLED']);
const DELETED = 'GENERATION_EVENT_TYPE_DELETED';

/** Whether a generation has finished its run (SUCCESS, FAILED or CANCELLED). */
export function isTerminal(generation) {
  return TERMINAL.has(generation?.status);
}

/**
 * The live URL of a prompt in a live scope, for <img src>: a GET returns the image,
 * generated once and then served from cache. `baseUrl` is the gateway's public base.
 */
export function liveUrl(baseUrl, projectSlug, scope, prompt, { aspectRatio = '', autoEnhance = false, template = '' } = {}) {
  const query = new URLSearchParams({ prompt });
  if (aspectRatio) query.set('aspectRatio', aspectRatio);
  if (autoEnhance) {
    query.set('autoEnhance', 'true');
    if (template) query.set('template', template);
  }
  const path = `/cdn/${encodeURIComponent(projectSlug)}/live/${encodeURIComponent(scope)}`;
  return `${baseUrl.replace(/\/+$/, '')}${path}?${query}`;
}

/** A JSON object as a google.protobuf.Struct (as proto-loader expects it). */
export function toStruct(object) {
  return { fields: Object.fromEntries(Object.entries(object ?? {}).map(([k, v]) => [k, toValue(v)])) };
}

function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value) };
}

/** A google.protobuf.Struct (as proto-loader returns it) as a plain JSON object. */
export function fromStruct(struct) {
  return Object.fromEntries(Object.entries(struct?.fields ?? {}).map(([k, v]) => [k, fromValue(v)]));
}

function fromValue(value) {
  switch (value?.kind) {
    case 'numberValue': return value.numberValue;
    case 'stringValue': return value.stringValue;
    case 'boolValue': return value.boolValue;
    case 'listValue': return (value.listValue.values ?? []).map(fromValue);
    case 'structValue': return fromStruct(value.structValue);
    default: return null;
  }
}

// Messages as callers want them: meta as a plain object.
function plainImage(image) {
  return image ? { ...image, meta: fromStruct(image.meta) } : image;
}

function plainGeneration(generation) {
  if (!generation) return generation;
  return { ...generation, meta: fromStruct(generation.meta), outputImage: plainImage(generation.outputImage) };
}

function plainEvent(event) {
  return { ...event, generation: plainGeneration(event.generation) };
}

function statusValue(value) {
  if (!value) return 'GENERATION_STATUS_UNSPECIFIED';
  const name = String(value).toUpperCase();
  return name.startsWith('GENERATION_STATUS_') ? name : `GENERATION_STATUS_${name}`;
}

/**
 * A client of one imagegen server.
 *
 * `address` and `apiKey` default to IMAGEGEN_ADDRESS (else 127.0.0.1:50051) and
 * IMAGEGEN_API_KEY. Every unary call has a deadline of `deadlineMs` (retries
 * included). Reads, and creates (which carry a generated requestId unless one is
 * given), are retried after UNAVAILABLE or RESOURCE_EXHAUSTED with exponential
 * backoff and jitter, never sooner than the server's RetryInfo asks. Failures
 * reject with ImagegenError.
 */
export function createClient({
  address = process.env.IMAGEGEN_ADDRESS || DEFAULT_ADDRESS,
  apiKey = process.env.IMAGEGEN_API_KEY,
  deadlineMs = 30_000,
  retry = {},
  credentials = grpc.credentials.createInsecure(),
} = {}) {
  const policy = { initialBackoffMs: 100, maxBackoffMs: 5_000, multiplier: 2, maxAttempts: 5, reconnectWindowMs: 30_000, ...retry };
  const options = {
    'grpc.max_receive_message_length': 6 * 1024 * 1024,
    'grpc.max_send_message_length': 6 * 1024 * 1024,
    'grpc.keepalive_time_ms': 30_000,
    // grpc-js backs off reconnects up to 120 s; keep it short so resumed watches
    // find a restarted server quickly.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1_000,
    'grpc.primary_user_agent': 'imagegen-node/0.1',
  };
  const generations = new v1.GenerationService(address, credentials, options);
  const channel = generations.getChannel();
  const shared = { channelOverride: channel };
  const images = new v1.ImageService(address, credentials, { ...options, ...shared });
  const flows = new v1.FlowService(address, credentials, { ...options, ...shared });
  const admin = new v1.AdminService(address, credentials, { ...options, ...shared });
  const projects = new v1.ProjectService(address, credentials, { ...options, ...shared });
  const health = new loaded.grpc.health.v1.Health(address, credentials, { ...options, ...shared });

  function metadata() {
    const md = new grpc.Metadata();
    if (apiKey) md.set('x-api-key', apiKey);
    return md;
  }

  function backoff(retryNumber, error) {
    const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** retryNumber);
    let wait = ceiling / 2 + Math.random() * (ceiling / 2);
    if (error.retryDelayMs != null) wait = Math.max(wait, error.retryDelayMs * (1 + Math.random() * 0.1));
    return wait;
  }

  function once(stub, method, request, deadline) {
    return new Promise((resolve, reject) => {
      let correlationId = null;
      const call = stub[method](request, metadata(), { deadline }, (error, reply) => {
        if (error) reject(fromServiceError(error, correlationId));
        else resolve(reply);
      });
      call.on('metadata', (md) => {
        correlationId = md.get('x-request-id')?.[0]?.toString() ?? null;
      });
    });
  }

  // The seam for unary calls: deadline, typed errors, retries when `safe`.
  async function unary(stub, method, request, { safe, timeoutMs = deadlineMs } = {}) {
    const deadlineAt = Date.now() + timeoutMs;
    for (let tries = 1; ; tries += 1) {
      try {
        return await once(stub, method, request, new Date(deadlineAt));
      } catch (error) {
        if (!safe || !TRANSIENT.has(error.code) || tries >= policy.maxAttempts) throw error;
        const wait = backoff(tries - 1, error);
        if (Date.now() + wait >= deadlineAt) throw error;
        await sleep(wait);
      }
    }
  }

  const client = {
    address,
    stubs: { generations, images, flows, admin, projects, health },

    /**
     * Start a generation; resolves at once with it (PENDING). flowId: undefined mints a flow, '' means none.
     * model: 'provider/model' ('' = the server's default); seed: undefined lets the server pick one;
     * outputFormat: 'png', 'jpeg' or 'webp' ('' = the server's default).
     * runTimeoutMs: how long the generation may take, queue time included.
     * webhook: { url, events: ['processing', 'completed'] } (events default to completed).
     */
    async createGeneration({ prompt, aspectRatio = '', referenceImages = [], flowId, alias = '', flowAlias = '', autoEnhance, enhancementTemplate = '', meta, requestId, model = '', seed, negativePrompt = '', outputFormat = '', runTimeoutMs, webhook } = {}, { timeoutMs } = {}) {
      const request = { prompt, aspectRatio, referenceImages, alias, flowAlias, enhancementTemplate, requestId: requestId ?? randomUUID(), model, negativePrompt, outputFormat };
      if (seed !== undefined) request.seed = seed;
      if (runTimeoutMs !== undefined) request.timeout = { seconds: Math.floor(runTimeoutMs / 1000), nanos: (runTimeoutMs % 1000) * 1e6 };
      if (webhook !== undefined) request.webhook = { url: webhook.url, events: webhook.events ?? [] };
      if (flowId !== undefined) request.flowId = flowId;
      if (autoEnhance !== undefined) request.autoEnhance = autoEnhance;
      if (meta !== undefined) request.meta = toStruct(meta);
      const reply = await unary(generations, 'CreateGeneration', request, { safe: Boolean(request.requestId), timeoutMs });
      return plainGeneration(reply);
    },

    /** One generation by ID. */
    async getGeneration(id, { timeoutMs } = {}) {
      return plainGeneration(await unary(generations, 'GetGeneration', { id }, { safe: true, timeoutMs }));
    },

    /** A page of generations, newest first; status like 'success'. */
    async listGenerations({ flowId = '', status: wanted, limit = 0, offset = 0, pageToken = '' } = {}, { timeoutMs } = {}) {
      const request = { flowId, status: statusValue(wanted), limit, offset, pageToken };
      const page = await unary(generations, 'ListGenerations', request, { safe: true, timeoutMs });
      return { ...page, generations: page.generations.map(plainGeneration) };
    },

    /**
     * Every state of a generation, in order and each once, as an async iterator.
     * When the stream drops (server restart, connection reset) it reconnects with
     * sinceRevision = the last revision it yielded. Ends after SUCCESS/FAILED (or
     * deletion) unless `follow`; `signal` (an AbortSignal) stops it.
     */
    async *watchGeneration(id, { sinceRevision = 0, follow = false, signal } = {}) {
      let last = sinceRevision;
      let failures = 0;
      let droppedAt = null;
      while (true) {
        signal?.throwIfAborted();
        let news = false;
        let correlationId = null;
        const call = generations.WatchGeneration({ id, sinceRevision: last, follow }, metadata());
        call.on('metadata', (md) => {
          correlationId = md.get('x-request-id')?.[0]?.toString() ?? null;
        });
        const stop = () => call.cancel();
        signal?.addEventListener('abort', stop);
        try {
          for await (const event of call) {
            if (event.revision <= last) continue; // already yielded before a reconnect
            last = event.revision;
            news = true;
            failures = 0;
            droppedAt = null;
            yield plainEvent(event);
            if (event.type === DELETED || (!follow && isTerminal(event.generation))) return;
          }
          if (!news) return; // a fresh stream closed without news: nothing more will come
        } catch (raw) {
          signal?.throwIfAborted();
          const error = fromServiceError(raw, correlationId);
          droppedAt ??= Date.now();
          const wait = backoff(failures, error);
          failures += 1;
          if (!TRANSIENT.has(error.code) || Date.now() + wait - droppedAt > policy.reconnectWindowMs) throw error;
          await sleep(wait);
        } finally {
          signal?.removeEventListener('abort', stop);
          call.cancel();
        }
      }
    },

    /**
     * Change a generation: only the fields given change (a new prompt or aspect ratio runs it
     * again; flowId '' detaches it; meta, a plain object, replaces the old metadata).
     */
    async updateGeneration(id, { prompt, aspectRatio, flowId, meta } = {}, { timeoutMs } = {}) {
      const request = { id, updateMask: { paths: [] } };
      for (const [field, path, value] of [['prompt', 'prompt', prompt], ['aspectRatio', 'aspect_ratio', aspectRatio], ['flowId', 'flow_id', flowId]]) {
        if (value === undefined) continue;
        request[field] = value;
        request.updateMask.paths.push(path);
      }
      if (meta !== undefined) {
        request.meta = toStruct(meta);
        request.updateMask.paths.push('meta');
      }
      return plainGeneration(await unary(generations, 'UpdateGeneration', request, { safe: false, timeoutMs }));
    },

    /** Store a PNG, JPEG or WebP picture (a Buffer, at most 5 MiB) to use as a reference. */
    async uploadImage({ content, mimeType = '', alias = '', flowId, flowAlias = '', meta, requestId } = {}, { timeoutMs } = {}) {
      const request = { content, mimeType, alias, flowAlias, requestId: requestId ?? randomUUID() };
      if (flowId !== undefined) request.flowId = flowId;
      if (meta !== undefined) request.meta = toStruct(meta);
      return plainImage(await unary(images, 'UploadImage', request, { safe: Boolean(request.requestId), timeoutMs }));
    },

    /** An image's bytes (by ID or alias) as one Buffer, with its media type. */
    async readImage(idOrAlias, { flowId = '', timeoutMs = deadlineMs } = {}) {
      const call = images.ReadImageContent({ idOrAlias, flowId }, metadata(), { deadline: new Date(Date.now() + timeoutMs) });
      let correlationId = null;
      call.on('metadata', (md) => {
        correlationId = md.get('x-request-id')?.[0]?.toString() ?? null;
      });
      const parts = [];
      let mimeType = '';
      let totalSize = null;
      try {
        for await (const chunk of call) {
          if (chunk.mimeType) mimeType = chunk.mimeType;
          if (chunk.totalSize) totalSize = chunk.totalSize;
          parts.push(chunk.data);
        }
      } catch (raw) {
        throw fromServiceError(raw, correlationId);
      }
      const data = Buffer.concat(parts);
      if (totalSize !== null && data.length !== totalSize) {
        throw new ImagegenError(`image ended after ${data.length} of ${totalSize} bytes`, { code: grpc.status.DATA_LOSS, reason: 'DOWNLOAD_INCOMPLETE' });
      }
      return { data, mimeType };
    },

    /** Resolves with the generation once it is SUCCESS or FAILED (rejects after timeoutMs). */
    async waitGeneration(id, { timeoutMs = 300_000 } = {}) {
      const signal = AbortSignal.timeout(timeoutMs);
      try {
        for await (const event of client.watchGeneration(id, { signal })) {
          if (event.type === DELETED) {
            throw new ImagegenError(`generation '${id}' was deleted while waiting`, { code: grpc.status.NOT_FOUND, reason: 'GENERATION_DELETED' });
          }
          if (isTerminal(event.generation)) return event.generation;
        }
      } catch (error) {
        if (signal.aborted) {
          throw new ImagegenError(`generation '${id}' did not finish within ${timeoutMs} ms`, { code: grpc.status.DEADLINE_EXCEEDED });
        }
        throw error;
      }
      return client.getGeneration(id);
    },

    /** Cancel a pending or processing generation (sent once); a finished one rejects with GENERATION_ALREADY_FINISHED. */
    async cancelGeneration(id, { timeoutMs } = {}) {
      return plainGeneration(await unary(generations, 'CancelGeneration', { id }, { safe: false, timeoutMs }));
    },

    /** The project's webhook signing secret ('whsec_…'), for verifyWebhook. */
    async getWebhookSecret({ timeoutMs } = {}) {
      return (await unary(projects, 'GetWebhookSecret', {}, { safe: true, timeoutMs })).secret;
    },

    /** The server's health: 'SERVING', 'NOT_SERVING', … */
    async checkHealth({ timeoutMs = 3_000 } = {}) {
      const reply = await unary(health, 'Check', { service: '' }, { safe: false, timeoutMs });
      return reply.status;
    },

    /** Close the channel. */
    close() {
      generations.close();
    },
  };
  return client;
}

const WEBHOOK_TOLERANCE_SECONDS = 5 * 60;

/**
 * Verify a webhook (Standard Webhooks) with the project's 'whsec_…' secret and return its
 * parsed body. `headers`: the request's headers (any case); `body`: the raw body as received
 * (a string or Buffer). Throws on a bad signature, a missing header, or a timestamp more than
 * five minutes away (a replay).
 */
export function verifyWebhook(secret, headers, body) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  const id = lower['webhook-id'];
  const timestamp = lower['webhook-timestamp'];
  const signatures = lower['webhook-signature'];
  if (!id || !timestamp || !signatures) throw new Error('webhook: missing webhook-id, webhook-timestamp or webhook-signature');
  const sent = Number(timestamp);
  if (!Number.isInteger(sent) || Math.abs(Date.now() / 1000 - sent) > WEBHOOK_TOLERANCE_SECONDS) {
    throw new Error('webhook: timestamp missing or too far from now');
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${text}`).digest();
  const matches = signatures.split(' ').some((entry) => {
    const [version, signature] = entry.split(',');
    if (version !== 'v1' || !signature) return false;
    const given = Buffer.from(signature, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matches) throw new Error('webhook: no matching signature');
  return JSON.parse(text);
}
