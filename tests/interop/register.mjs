// Preload for running @cloudflare/sandbox under plain Node 20:
//   node --import ./register.mjs <script>.mjs
// Installs the resolve hook in loader.mjs and provides a global WebSocket
// (Node 20 has none; the SDK's websocket transport and capnweb read it).
import { register } from 'node:module';

register('./loader.mjs', import.meta.url);

globalThis.WebSocket ??= (await import('ws')).WebSocket;
