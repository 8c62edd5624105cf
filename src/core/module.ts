/**
 * Compiles the core module once, synchronously, from the bytes embedded in
 * `wasm_bytes.generated.ts` (so loading needs no permissions and works under `deno compile` and
 * as a JSR import).
 * @module
 */
import { WASM_BASE64 } from "./wasm_bytes.generated.ts";

let compiled: WebAssembly.Module | undefined;

function decodeBase64(text: string): Uint8Array {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/**
 * The compiled core module (compiled on first use, then shared by every instance).
 *
 * @returns The module.
 */
export function coreModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(decodeBase64(WASM_BASE64) as Uint8Array<ArrayBuffer>);
  return compiled;
}
