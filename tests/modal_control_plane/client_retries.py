"""What the modal 1.6.4 client retries by itself, so our own retries do not stack on top of it.

Read from modal/_utils/grpc_utils.py (`_retry_transient_errors`, `Retry`) and
modal/_grpc_client.py (`UnaryUnaryWrapper.__call__`), and measured against this control plane
with `fail_next` in test_client_retries.py, which fails if any of this stops being true.

1. Every unary RPC a modal object makes (`client._stub.X(request)`) goes through
   `_retry_transient_errors` with the default `Retry()` unless the call site passes its own:
   - retried statuses: DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED, INTERNAL, UNKNOWN
     (plus OSError, asyncio.TimeoutError, StreamTerminatedError and h2 protocol errors);
   - at most 3 retries, i.e. 4 attempts, sleeping 0.1, 0.2, 0.4 s in between (x2, capped at 1 s):
     about 0.7 s in all, then the last error surfaces as a modal exception
     (UNAVAILABLE/DEADLINE_EXCEEDED/CANCELLED/UNKNOWN -> ServiceError, INTERNAL -> InternalError);
   - every other status is raised at once, on the first attempt: NOT_FOUND -> NotFoundError,
     ALREADY_EXISTS -> AlreadyExistsError, INVALID_ARGUMENT/OUT_OF_RANGE -> InvalidError,
     FAILED_PRECONDITION/ABORTED -> ConflictError, RESOURCE_EXHAUSTED -> ResourceExhaustedError,
     PERMISSION_DENIED -> PermissionDeniedError, UNAUTHENTICATED -> AuthError,
     UNIMPLEMENTED -> UnimplementedError, DATA_LOSS -> DataLossError;
   - all attempts share one `x-idempotency-key` header, and carry `x-retry-attempt` = 0, 1, 2, 3.
   - a status whose details carry an `RPCRetryPolicy` is retried after the server's
     `retry_after_secs`, without limit unless `max_throttle_wait` is configured (we never send one).
2. Call sites with their own policy (same statuses unless noted):
   - base delay 1 s (delays 1, 1, 1 s; 4 attempts): MountGetOrCreate, MountPutFile,
     MountBatchedCheckExistence, VolumePutFiles, VolumePutFiles2, VolumeCopyFiles, VolumeCopyFiles2;
   - VolumeCommit: 90 retries;
   - FunctionGetOutputs for `.remote()`/`.get()`: 3 retries, each attempt cut off after the long-poll
     timeout (55 s) + 5 s grace; during `.map()`: 20 retries;
   - `.map()`/`.spawn_map()` input pumping (FunctionPutInputs, FunctionRetryInputs,
     FunctionFinishInputs, FunctionMap from spawn_map): retried forever, RESOURCE_EXHAUSTED included;
   - AppHeartbeat: default retries with a per-attempt timeout of the heartbeat interval (15 s) + 0.1 s;
   - FunctionGetCurrentStats, DictGetOrCreate: retried until 10 s have passed;
   - no retries at all (`retry=None`): WorkspaceNameLookup, ObjectSuggest, TokenFlowWait.
3. Server-streaming RPCs (VolumeListFiles2, AppGetLogs, ...) are not retried, with one exception:
   ImageJoinStreaming is re-joined on ServiceError/InternalError up to 3 attempts in all, with no
   delay, after which a deploy fails.
4. Outside RPC statuses: opening the connection is retried for up to 18 attempts / ~63 s (a dead
   control plane makes the client hang about a minute, not fail fast); HTTP transfers retry too
   (block and blob GETs 5 attempts, volume block PUTs 11).

Consequences for fault injection and for our provider's retry logic:
- To make one of our own retries happen, a transient fault must outlast the client:
  `cp.fail_next(rpc, n=CLIENT_ATTEMPTS, status=UNAVAILABLE)` makes exactly one client-level
  operation fail (`ServiceError`); fewer failures are absorbed by the client invisibly (but show up
  in the call log, once per attempt).
- Permanent statuses reach our code on the first attempt; retrying them is our decision alone.
- Our provider should retry only on `modal.exception.ServiceError`/`InternalError`/`ConnectionError`,
  a few times with backoff measured in seconds, and never on NotFound/AlreadyExists/Invalid/Conflict.
"""

from grpclib import Status

# Statuses the client retries on its own, for every unary RPC.
CLIENT_RETRIED_STATUSES = frozenset(
    {Status.DEADLINE_EXCEEDED, Status.UNAVAILABLE, Status.CANCELLED, Status.INTERNAL, Status.UNKNOWN}
)

# Default policy: 3 retries after the first attempt.
CLIENT_MAX_RETRIES = 3
CLIENT_ATTEMPTS = CLIENT_MAX_RETRIES + 1

# Sleeps between those attempts under the default policy (base 0.1 s, doubling, capped at 1 s).
CLIENT_RETRY_DELAYS_SECONDS = (0.1, 0.2, 0.4)

# ImageJoinStreaming is re-joined by its caller, not by the RPC wrapper: this many attempts in all.
IMAGE_JOIN_ATTEMPTS = 3
