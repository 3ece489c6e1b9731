// Public entry point of the `latchgate` package: the LatchGate client, its
// error classes, receipts and their offline verification, and the JCS and
// DPoP helpers the client is built on. Semver applies to everything exported here.

export {
  LatchGateClient,
  type ActionEgress,
  type ActionInfo,
  type ActionSummary,
  type ApprovalStatus,
  type Budgets,
  type ConnectOptions,
  type ExecuteOptions,
  type ExecuteResult,
  type LatchGateClientOptions,
  type LeaseInfo,
  type Logger,
  type WaitOptions,
} from "./client.js";
export {
  LatchGateActionFailed,
  LatchGateApprovalRequired,
  LatchGateAuthError,
  LatchGateBudgetExhausted,
  LatchGateDenied,
  LatchGateError,
  LatchGateLeaseExpired,
  LatchGateNotConnected,
  LatchGateReplayDetected,
  LatchGateTransportError,
  LatchGateUnavailable,
  errorFromResponse,
  parseRetryAfter,
  type GateErrorDetails,
} from "./errors.js";
export { Receipt, computeReceiptHash, okpThumbprint, type ReceiptJwk, type ReceiptKeys, type ReceiptVerification } from "./receipt.js";
export { JcsError, canonicalize, canonicalizeText, hasLoneSurrogate, parseStrictJson, sha256Canonical, type JsonValue } from "./jcs.js";
export { DpopKey, ecThumbprint, normalizeHtu, type EcPublicJwk } from "./dpop.js";
export { defaultSocketCandidates, resolveTarget, unsafeSocketReason, type GateTarget } from "./transport.js";
