// Types of index.js. Messages are plain objects as @grpc/proto-loader gives them:
// camelCase fields, enums as their value names, 64-bit integers as numbers, unset
// message fields as null; `meta` is a plain JSON object both ways.
import type { ChannelCredentials, status as grpcStatus } from '@grpc/grpc-js';

export { ImagegenError, FieldViolation } from './errors.js';

/** gRPC status codes by name (status.NOT_FOUND === 5). */
export const status: typeof grpcStatus;
export const DEFAULT_ADDRESS: string;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export type GenerationStatus =
  | 'GENERATION_STATUS_UNSPECIFIED'
  | 'GENERATION_STATUS_PENDING'
  | 'GENERATION_STATUS_PROCESSING'
  | 'GENERATION_STATUS_SUCCESS'
  | 'GENERATION_STATUS_FAILED'
  | 'GENERATION_STATUS_CANCELLED';
/** A status filter: the value name, or its short name in any case ('success'). */
export type StatusFilter = GenerationStatus | 'pending' | 'processing' | 'success' | 'failed' | 'cancelled' | (string & {});
export type GenerationEventType =
  | 'GENERATION_EVENT_TYPE_UNSPECIFIED'
  | 'GENERATION_EVENT_TYPE_SNAPSHOT'
  | 'GENERATION_EVENT_TYPE_CREATED'
  | 'GENERATION_EVENT_TYPE_UPDATED'
  | 'GENERATION_EVENT_TYPE_DELETED';
export type ImageSource = 'IMAGE_SOURCE_UNSPECIFIED' | 'IMAGE_SOURCE_GENERATED' | 'IMAGE_SOURCE_UPLOADED';
export type AspectRatio = '1:1' | '16:9' | '9:16' | '3:2' | '21:9';
export type OutputFormat = 'png' | 'jpeg' | 'webp';
export type EnhancementTemplate =
  | 'general'
  | 'photorealistic'
  | 'illustration'
  | 'minimalist'
  | 'sticker'
  | 'product'
  | 'comic';

/** google.protobuf.Timestamp. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** google.protobuf.Duration. */
export interface Duration {
  seconds: number;
  nanos: number;
}

/** The webhook events a generation may send. */
export type WebhookEvent = 'processing' | 'completed';

export interface FocalPoint {
  x: number;
  y: number;
}

export interface Image {
  id: string;
  projectId: string;
  flowId?: string;
  generationId?: string;
  source: ImageSource;
  alias: string;
  mimeType: string;
  fileSize: number;
  width: number;
  height: number;
  focalPoint: FocalPoint | null;
  meta: JsonObject;
  /** Where the REST gateway serves the bytes. */
  url: string;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
  etag: string;
}

export interface GenerationError {
  code: string;
  message: string;
}

export interface ReferenceImage {
  imageId: string;
  alias: string;
  url: string;
}

export interface Generation {
  id: string;
  projectId: string;
  flowId?: string;
  prompt: string;
  originalPrompt?: string;
  autoEnhance: boolean;
  enhancementTemplate: string;
  aspectRatio: string;
  status: GenerationStatus;
  outputImage: Image | null;
  referenceImages: ReferenceImage[];
  meta: JsonObject;
  error: GenerationError | null;
  processingTimeMs: number;
  attempt: number;
  revision: number;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
  startTime: Timestamp | null;
  completeTime: Timestamp | null;
  alias: string;
  flowAlias: string;
  requestedReferences: string[];
  /** provider/model (openai/gpt-image-1, …) or local. */
  model: string;
  /** The seed of the current run. */
  seed: number;
  negativePrompt: string;
  /** png, jpeg, webp, or '' for the deployment's default. */
  outputFormat: OutputFormat | '';
  /** template, openai/<model> or gemini/<model>; '' when no enhancement ran. */
  enhancedBy: string;
  enhancementFallbackReason: string;
  /** How long the run may take, queue time included (null: no limit). */
  timeout: Duration | null;
  /** Where webhooks about this generation are sent ('' = none). */
  webhookUrl: string;
  webhookEvents: (WebhookEvent | (string & {}))[];
  /** When it was cancelled (null unless CANCELLED). */
  cancelTime: Timestamp | null;
}

export interface GenerationEvent {
  type: GenerationEventType;
  generation: Generation;
  revision: number;
  cursor: string;
}

export interface ListGenerationsResponse {
  generations: Generation[];
  total: number;
  limit: number;
  offset: number;
  hasMore: boolean;
  nextPageToken: string;
}

export interface CreateGenerationOptions {
  prompt: string;
  aspectRatio?: AspectRatio | (string & {});
  /** Image IDs or aliases (@name). */
  referenceImages?: string[];
  /** undefined mints a new flow; '' means no flow. */
  flowId?: string;
  alias?: string;
  flowAlias?: string;
  autoEnhance?: boolean;
  enhancementTemplate?: EnhancementTemplate | (string & {});
  /** Any JSON object (sent as a google.protobuf.Struct). */
  meta?: JsonObject;
  /** Idempotency key; a fresh one by default, so the call is retried safely. */
  requestId?: string;
  /** provider/model, for example openai/gpt-image-1, or local ('' = the server's default). */
  model?: string;
  /** 0 to 2147483647, for repeatable pictures (default: the server picks one per run). */
  seed?: number;
  /** What the picture should not show. */
  negativePrompt?: string;
  /** '' = the server's default. */
  outputFormat?: OutputFormat | '';
  /** How long the generation may take, queue time included; past it, it ends FAILED DEADLINE_EXCEEDED. */
  runTimeoutMs?: number;
  /** A Standard Webhooks POST to `url` on the listed events (default: completed). */
  webhook?: { url: string; events?: WebhookEvent[] };
}

export interface UpdateGenerationOptions {
  /** A new prompt: runs the generation again. */
  prompt?: string;
  /** A new aspect ratio: runs the generation again. */
  aspectRatio?: AspectRatio | (string & {});
  /** A flow to move it to; '' detaches it. */
  flowId?: string;
  /** New metadata (replaces the old). */
  meta?: JsonObject;
}

export interface UploadImageOptions {
  /** The picture: PNG, JPEG or WebP, at most 5 MiB. */
  content: Uint8Array;
  /** The claimed type, checked against the bytes (default: read from them). */
  mimeType?: string;
  alias?: string;
  /** undefined mints a new flow; '' means no flow. */
  flowId?: string;
  flowAlias?: string;
  meta?: JsonObject;
  requestId?: string;
}

export interface ImageContent {
  data: Buffer;
  mimeType: string;
}

export interface ListGenerationsOptions {
  flowId?: string;
  status?: StatusFilter;
  limit?: number;
  offset?: number;
  pageToken?: string;
}

export interface CallOptions {
  /** Deadline of the call, retries included (default: the client's deadlineMs). */
  timeoutMs?: number;
}

export interface WatchOptions {
  sinceRevision?: number;
  /** Keep watching after SUCCESS/FAILED. */
  follow?: boolean;
  signal?: AbortSignal;
}

export interface RetryOptions {
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  multiplier?: number;
  maxAttempts?: number;
  /** How long a watch keeps reconnecting after its stream drops. */
  reconnectWindowMs?: number;
}

export interface ClientOptions {
  /** host:port (default IMAGEGEN_ADDRESS, else 127.0.0.1:50051). */
  address?: string;
  /** Default IMAGEGEN_API_KEY. */
  apiKey?: string;
  deadlineMs?: number;
  retry?: RetryOptions;
  credentials?: ChannelCredentials;
}

export interface ImagegenClient {
  readonly address: string;
  /** The raw grpc-js stubs of every service (requests and replies as proto-loader shapes them). */
  readonly stubs: Record<'generations' | 'images' | 'flows' | 'admin' | 'projects' | 'health', unknown>;
  createGeneration(request: CreateGenerationOptions, options?: CallOptions): Promise<Generation>;
  getGeneration(id: string, options?: CallOptions): Promise<Generation>;
  listGenerations(request?: ListGenerationsOptions, options?: CallOptions): Promise<ListGenerationsResponse>;
  updateGeneration(id: string, changes: UpdateGenerationOptions, options?: CallOptions): Promise<Generation>;
  watchGeneration(id: string, options?: WatchOptions): AsyncGenerator<GenerationEvent, void, undefined>;
  uploadImage(request: UploadImageOptions, options?: CallOptions): Promise<Image>;
  readImage(idOrAlias: string, options?: { flowId?: string; timeoutMs?: number }): Promise<ImageContent>;
  waitGeneration(id: string, options?: { timeoutMs?: number }): Promise<Generation>;
  /** Cancel a pending or processing generation; a finished one rejects with FAILED_PRECONDITION GENERATION_ALREADY_FINISHED. */
  cancelGeneration(id: string, options?: CallOptions): Promise<Generation>;
  /** The project's webhook signing secret ('whsec_…'), for verifyWebhook. */
  getWebhookSecret(options?: CallOptions): Promise<string>;
  checkHealth(options?: { timeoutMs?: number }): Promise<'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'SERVICE_UNKNOWN'>;
  close(): void;
}

export function createClient(options?: ClientOptions): ImagegenClient;
/** Whether a generation has finished its run (SUCCESS, FAILED or CANCELLED). */
export function isTerminal(generation: Pick<Generation, 'status'> | null | undefined): boolean;
/** A JSON object as a google.protobuf.Struct (as proto-loader expects it). */
export function toStruct(object: JsonObject | null | undefined): { fields: Record<string, unknown> };
/** A google.protobuf.Struct (as proto-loader returns it) as a plain JSON object. */
export function fromStruct(struct: { fields?: Record<string, unknown> } | null | undefined): JsonObject;
/**
 * The live URL of a prompt in a live scope, for <img src>: a GET returns the image,
 * generated on the first request (`baseUrl` is the gateway's public base).
 */
export function liveUrl(
  baseUrl: string,
  projectSlug: string,
  scope: string,
  prompt: string,
  options?: { aspectRatio?: AspectRatio | (string & {}); autoEnhance?: boolean; template?: EnhancementTemplate | (string & {}) },
): string;
/**
 * Verify a webhook (Standard Webhooks) with the project's 'whsec_…' secret and return its
 * parsed body. `body` is the raw body as received; throws on a bad signature, a missing
 * header, or a timestamp more than five minutes away (a replay).
 */
export function verifyWebhook(
  secret: string,
  headers: Record<string, string | string[] | undefined>,
  body: string | Buffer,
): JsonObject;
