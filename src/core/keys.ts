/**
 * WireGuard keys as people handle them: 32 bytes in standard base64 (44 characters), the same
 * text `wg genkey` and `wg pubkey` read and print.
 * @module
 */
import { derivePublicKey } from "./wasm_core.ts";

/**
 * Decodes a base64 WireGuard key.
 *
 * @param key 44 characters of base64.
 * @param what Names the key in the error message.
 * @returns The 32 key bytes.
 * @throws {SyntaxError} When `key` is not a base64 encoding of 32 bytes.
 */
export function decodeKey(key: string, what = "key"): Uint8Array {
  const text = key.trim();
  if (!/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(text)) {
    throw new SyntaxError(
      `Cannot parse ${what}: expected 44 characters of base64 (32 bytes), got "${text.slice(0, 60)}"`,
    );
  }
  const bin = atob(text);
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/**
 * Encodes 32 key bytes as base64.
 *
 * @param bytes The key.
 * @returns 44 characters of base64.
 */
export function encodeKey(bytes: Uint8Array): string {
  if (bytes.length !== 32) throw new RangeError(`a key is 32 bytes, not ${bytes.length}`);
  return btoa(String.fromCharCode(...bytes));
}

/**
 * Makes a new private key, clamped as Curve25519 requires (like `wg genkey`).
 *
 * @returns The key in base64.
 *
 * @example
 * ```ts
 * import { generatePrivateKey, publicKeyOf } from "./keys.ts";
 * const privateKey = generatePrivateKey();
 * console.log(publicKeyOf(privateKey).length); // 44
 * ```
 */
export function generatePrivateKey(): string {
  const k = crypto.getRandomValues(new Uint8Array(32));
  k[0] = k[0]! & 248;
  k[31] = (k[31]! & 127) | 64;
  return encodeKey(k);
}

/**
 * The public key of a private key (like `wg pubkey`).
 *
 * @param privateKey The private key in base64.
 * @returns The public key in base64.
 * @throws {SyntaxError} When `privateKey` is not a key.
 */
export function publicKeyOf(privateKey: string): string {
  return encodeKey(derivePublicKey(decodeKey(privateKey, "private key")));
}
