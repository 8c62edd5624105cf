import assert from "node:assert/strict";
import { isIPv4 } from "node:net";
import { primaryHostAddress } from "./host_address.ts";

Deno.test("primaryHostAddress() returns one of this host's IPv4 addresses, not loopback", () => {
  const address = primaryHostAddress();
  const own = Deno.networkInterfaces().filter((i) => i.family === "IPv4" && !i.address.startsWith("127."));
  if (own.length === 0) {
    assert.equal(address, null);
    return;
  }
  assert(address !== null);
  assert(isIPv4(address), address);
  assert(!address.startsWith("127.") && address !== "0.0.0.0", address);
  assert(own.some((i) => i.address === address), `${address} is not on any interface`);
});

Deno.test("primaryHostAddress() matches the source address of `ip route get`", async (t) => {
  let output;
  try {
    output = await new Deno.Command("ip", { args: ["-4", "route", "get", "1.1.1.1"], stderr: "null" })
      .output();
  } catch {
    console.warn(`${t.name}: no ip command; skipped`);
    return;
  }
  const src = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(new TextDecoder().decode(output.stdout))?.[1];
  if (!output.success || src === undefined) {
    console.warn(`${t.name}: ip route get found no route; skipped`);
    return;
  }
  assert.equal(primaryHostAddress(), src);
});
