// Typed errors of the imagegen Node client: one seam turns a grpc-js ServiceError
// into an ImagegenError with the google.rpc details the server attaches.
import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const STATUS_DETAILS_KEY = 'grpc-status-details-bin';

// google.rpc.Status and the three details imagegen sends (ErrorInfo, BadRequest,
// RetryInfo), defined inline so the package needs no googleapis checkout.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { typeUrl: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            BadRequest: {
              fields: { fieldViolations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } },
                },
              },
            },
            RetryInfo: { fields: { retryDelay: { type: 'google.protobuf.Duration', id: 1 } } },
          },
        },
      },
    },
  },
});
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');
const BadRequest = rpcTypes.lookupType('google.rpc.BadRequest');
const RetryInfo = rpcTypes.lookupType('google.rpc.RetryInfo');

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/** A failed imagegen call: gRPC code, ErrorInfo reason, bad fields, retry delay, correlation id. */
export class ImagegenError extends Error {
  constructor(message, { code = grpc.status.UNKNOWN, reason = '', metadata = {}, fieldViolations = [], retryDelayMs = null, correlationId = null } = {}) {
    const codeName = CODE_NAMES[code] ?? String(code);
    super(`${codeName}${reason ? ` ${reason}` : ''}: ${message}`);
    this.name = 'ImagegenError';
    this.code = code;
    this.codeName = codeName;
    this.details = message;
    this.reason = reason;
    this.metadata = metadata;
    this.fieldViolations = fieldViolations;
    this.retryDelayMs = retryDelayMs;
    // The server's id of the call in its logs (x-request-id); not a request's requestId,
    // which is the idempotency key.
    this.correlationId = correlationId;
  }
}

/** The seam: a grpc-js ServiceError (and the correlation id seen in its headers) as an ImagegenError. */
export function fromServiceError(error, correlationId = null) {
  if (error instanceof ImagegenError) return error;
  const code = typeof error?.code === 'number' ? error.code : grpc.status.UNKNOWN;
  const found = { code, correlationId };
  const raw = error?.metadata?.get?.(STATUS_DETAILS_KEY)?.[0];
  if (raw) Object.assign(found, statusDetails(raw));
  const idInTrailers = error?.metadata?.get?.('x-request-id')?.[0];
  if (!found.correlationId && idInTrailers) found.correlationId = String(idInTrailers);
  return new ImagegenError(error?.details ?? String(error?.message ?? error), found);
}

function statusDetails(raw) {
  const found = {};
  let status;
  try {
    status = Status.decode(raw);
  } catch {
    return found; // a malformed status must not hide the error it came with
  }
  for (const detail of status.details) {
    const type = detail.typeUrl.slice(detail.typeUrl.lastIndexOf('/') + 1);
    if (type === 'google.rpc.ErrorInfo') {
      const info = ErrorInfo.decode(detail.value);
      found.reason = info.reason;
      found.metadata = { ...info.metadata };
    } else if (type === 'google.rpc.BadRequest') {
      found.fieldViolations = BadRequest.decode(detail.value).fieldViolations.map((v) => ({
        field: v.field,
        description: v.description,
      }));
    } else if (type === 'google.rpc.RetryInfo') {
      const delay = RetryInfo.decode(detail.value).retryDelay ?? { seconds: 0, nanos: 0 };
      found.retryDelayMs = Number(delay.seconds ?? 0) * 1000 + (delay.nanos ?? 0) / 1e6;
    }
  }
  return found;
}
