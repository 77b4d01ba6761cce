// Module resolve hook (registered by register.mjs) that lets plain Node load
// @cloudflare/sandbox:
//  1. `cloudflare:workers` (Workers-only built-in) is answered with a small stub.
//  2. Extensionless relative ESM imports (used by @cloudflare/containers) that
//     fail with ERR_MODULE_NOT_FOUND are retried with `.js` appended.

const WORKERS_STUB = `
export class DurableObject {
  constructor(ctx, env) { this.ctx = ctx; this.env = env; }
}
export class WorkerEntrypoint {
  constructor(ctx, env) { this.ctx = ctx; this.env = env; }
}
export class RpcTarget {}
export const env = {};
const noopSpan = {
  setAttribute() {}, setAttributes() {}, addEvent() {}, setStatus() {},
  recordException() {}, updateName() {}, end() {}, isRecording() { return false; },
};
export const tracing = {
  enterSpan(name, fn, ...args) { return fn(noopSpan, ...args); },
};
export default { DurableObject, WorkerEntrypoint, RpcTarget, env, tracing };
`;

const WORKERS_STUB_URL = 'data:text/javascript,' + encodeURIComponent(WORKERS_STUB);

function isRelative(specifier) {
  return specifier.startsWith('./') || specifier.startsWith('../');
}

export async function resolve(specifier, context, next) {
  if (specifier === 'cloudflare:workers') {
    return { url: WORKERS_STUB_URL, format: 'module', shortCircuit: true };
  }
  try {
    return await next(specifier, context);
  } catch (err) {
    if (err?.code === 'ERR_MODULE_NOT_FOUND' && isRelative(specifier) && !specifier.endsWith('.js')) {
      return next(specifier + '.js', context);
    }
    throw err;
  }
}
