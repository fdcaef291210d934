// Types of errors.js: the typed error every failed call rejects with.
import type { ServiceError } from '@grpc/grpc-js';

/** One bad request field named by the server (google.rpc.BadRequest). */
export interface FieldViolation {
  field: string;
  description: string;
}

export interface ImagegenErrorOptions {
  code?: number;
  reason?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  retryDelayMs?: number | null;
  correlationId?: string | null;
}

/** A failed imagegen call: gRPC code, ErrorInfo reason, bad fields, retry delay, correlation id. */
export class ImagegenError extends Error {
  constructor(message: string, options?: ImagegenErrorOptions);
  /** The gRPC status code (see `status`). */
  code: number;
  /** Its name: 'NOT_FOUND', 'INVALID_ARGUMENT', … */
  codeName: string;
  /** The server's message without the code and reason. */
  details: string;
  /** The stable UPPER_SNAKE reason of google.rpc.ErrorInfo ('' when none was sent). */
  reason: string;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  /** The delay the server asked for (google.rpc.RetryInfo), in milliseconds. */
  retryDelayMs: number | null;
  /** The server's id of the call in its logs (x-request-id); not a request's requestId. */
  correlationId: string | null;
}

/** A grpc-js ServiceError (and the correlation id seen in its headers) as an ImagegenError. */
export function fromServiceError(error: ServiceError | unknown, correlationId?: string | null): ImagegenError;
