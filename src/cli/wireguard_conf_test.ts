import assert from "node:assert/strict";
import { isIPv4, isIPv6 } from "node:net";
import { stripVTControlCharacters } from "node:util";
import { publicKeyOf } from "../core/keys.ts";
import {
  clientConfig,
  clientPeers,
  loadWireGuardState,
  qrCode,
  type WireGuardState,
  writeClientConfigs,
} from "./wireguard_conf.ts";

/** Runs a command and returns its status and output; `null` when the program is missing. */
async function run(
  program: string,
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string } | null> {
  try {
    const child = new Deno.Command(program, {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const { code, stdout, stderr } = await child.output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code, stdout: decode(stdout), stderr: decode(stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Calls `body` with a fresh temporary directory and removes it afterwards. */
async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope_wg_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A state with fixed keys, for the text tests. */
function fixedState(clients: number): WireGuardState {
  const key = (n: number) => btoa(String.fromCharCode(...new Uint8Array(32).fill(n)));
  return {
    serverPrivateKey: key(0x40),
    clientPrivateKeys: Array.from({ length: clients }, (_, i) => key(0x50 + i)),
    ulaPrefix: "fd3a:91c2:7b10:5e21",
  };
}

Deno.test("loadWireGuardState() makes the file with mode 0600 and a fresh ULA prefix", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/sub/wireguard.json`;
    const state = await loadWireGuardState(file, 2);
    assert.equal(state.clientPrivateKeys.length, 2);
    assert.equal(publicKeyOf(state.serverPrivateKey).length, 44);
    assert.match(state.ulaPrefix, /^fd[0-9a-f]{2}(:[0-9a-f]{4}){3}$/);
    assert.notEqual(state.ulaPrefix, "fd00:0000:0000:0000");
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(`${dir}/sub`)).mode! & 0o777, 0o700);
    }
    assert.deepEqual(JSON.parse(await Deno.readTextFile(file)), state);
    assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["wireguard.json"]);
  });
});

Deno.test("loadWireGuardState() picks a different ULA prefix for each new file", async () => {
  await withTempDir(async (dir) => {
    const a = await loadWireGuardState(`${dir}/a.json`, 1);
    const b = await loadWireGuardState(`${dir}/b.json`, 1);
    assert.notEqual(a.ulaPrefix, b.ulaPrefix);
    assert.notEqual(a.serverPrivateKey, b.serverPrivateKey);
  });
});

Deno.test("loadWireGuardState() keeps the keys across restarts", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/wireguard.json`;
    const first = await loadWireGuardState(file, 3);
    const before = await Deno.readTextFile(file);
    assert.deepEqual(await loadWireGuardState(file, 3), first);
    assert.deepEqual(await loadWireGuardState(file, 1), first, "fewer peers keeps every key");
    assert.equal(await Deno.readTextFile(file), before, "an unchanged state is not rewritten");
  });
});

Deno.test("loadWireGuardState() appends client keys when peers grows", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/wireguard.json`;
    const first = await loadWireGuardState(file, 2);
    const grown = await loadWireGuardState(file, 5);
    assert.equal(grown.serverPrivateKey, first.serverPrivateKey);
    assert.equal(grown.ulaPrefix, first.ulaPrefix);
    assert.equal(grown.clientPrivateKeys.length, 5);
    assert.deepEqual(grown.clientPrivateKeys.slice(0, 2), first.clientPrivateKeys);
    assert.equal(new Set(grown.clientPrivateKeys).size, 5);
    assert.deepEqual(await loadWireGuardState(file, 1), grown);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
  });
});

Deno.test("loadWireGuardState() names the file when its contents are not a valid state", async () => {
  await withTempDir(async (dir) => {
    const good = fixedState(2);
    const cases: [string, RegExp][] = [
      ["{not json", /not valid JSON/],
      ["[]", /not a JSON object/],
      [JSON.stringify({ ...good, serverPrivateKey: 7 }), /"serverPrivateKey" is not a string/],
      [JSON.stringify({ ...good, serverPrivateKey: "short" }), /Cannot parse "serverPrivateKey"/],
      [JSON.stringify({ ...good, clientPrivateKeys: [] }), /"clientPrivateKeys" is not a non-empty array/],
      [
        JSON.stringify({ ...good, clientPrivateKeys: [good.clientPrivateKeys[0], 1] }),
        /client key 2 is not a string/,
      ],
      [JSON.stringify({ ...good, clientPrivateKeys: ["x".repeat(44)] }), /Cannot parse client key 1/],
      [JSON.stringify({ ...good, clientPrivateKeys: [good.serverPrivateKey] }), /share a private key/],
      [JSON.stringify({ ...good, ulaPrefix: "fc00:1:2:3" }), /"ulaPrefix" is not four groups/],
      [JSON.stringify({ ...good, ulaPrefix: "fd00:0000:0000:0000" }), /must not be fd00::\/64/],
    ];
    const file = `${dir}/wireguard.json`;
    for (const [text, reason] of cases) {
      await Deno.writeTextFile(file, text);
      await assert.rejects(loadWireGuardState(file, 1), (e: unknown) => {
        assert(e instanceof Error);
        assert(e.message.startsWith(`Cannot use WireGuard state ${file}: `), e.message);
        assert.match(e.message, reason);
        return true;
      });
      assert.equal(await Deno.readTextFile(file), text, "a bad file is left alone");
    }
    await Deno.writeTextFile(file, JSON.stringify(good));
    assert.deepEqual(await loadWireGuardState(file, 2), good);
  });
});

Deno.test("loadWireGuardState() rejects a peer count outside 1 to 250", async () => {
  await withTempDir(async (dir) => {
    for (const peers of [0, 251, 1.5]) {
      await assert.rejects(loadWireGuardState(`${dir}/wireguard.json`, peers), RangeError);
    }
  });
});

Deno.test("loadWireGuardState() names the file when it cannot be read", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(loadWireGuardState(dir, 1), new RegExp(`Cannot read WireGuard state ${dir}`));
  });
});

Deno.test("clientPeers() numbers clients from 1 with their keys and addresses", () => {
  const state = fixedState(12);
  const peers = clientPeers(state, 10);
  assert.equal(peers.length, 10);
  assert.deepEqual(peers[0], {
    index: 1,
    privateKey: state.clientPrivateKeys[0],
    publicKey: publicKeyOf(state.clientPrivateKeys[0]!),
    address4: "10.0.0.2",
    address6: "fd3a:91c2:7b10:5e21::2",
  });
  assert.equal(peers[9]!.address4, "10.0.0.11");
  assert.equal(peers[9]!.address6, "fd3a:91c2:7b10:5e21::11");
  for (const peer of peers) {
    assert(isIPv4(peer.address4) && isIPv6(peer.address6), `${peer.address4} ${peer.address6}`);
  }
  assert.throws(() => clientPeers(state, 13), /has 12 client keys, not 13/);
  assert.throws(() => clientPeers(state, 0), RangeError);
});

Deno.test("clientConfig() writes the wg-quick format", () => {
  const state = fixedState(2);
  const peer = clientPeers(state, 2)[1]!;
  assert.equal(
    clientConfig(state, peer, "[2001:db8::1]:51820"),
    `[Interface]
PrivateKey = ${state.clientPrivateKeys[1]}
Address = 10.0.0.3/32, fd3a:91c2:7b10:5e21::3/128
DNS = 10.0.0.53

[Peer]
PublicKey = ${publicKeyOf(state.serverPrivateKey)}
Endpoint = [2001:db8::1]:51820
AllowedIPs = 0.0.0.0/0, ::/0
`,
  );
});

Deno.test("writeClientConfigs() writes one 0600 file per client", async () => {
  await withTempDir(async (dir) => {
    const state = fixedState(3);
    const confdir = `${dir}/conf`;
    const paths = await writeClientConfigs(confdir, state, 2, "192.0.2.1:51820");
    assert.deepEqual(paths, [`${confdir}/wireguard-client-1.conf`, `${confdir}/wireguard-client-2.conf`]);
    const peers = clientPeers(state, 2);
    for (const [i, path] of paths.entries()) {
      assert.equal(await Deno.readTextFile(path), clientConfig(state, peers[i]!, "192.0.2.1:51820"));
      if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    }
    // A file left with looser permissions is tightened when rewritten.
    await Deno.chmod(paths[0]!, 0o644);
    await writeClientConfigs(confdir, state, 1, "192.0.2.1:51820");
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(paths[0]!)).mode! & 0o777, 0o600);
  });
});

Deno.test("clientConfig() output passes wg-quick strip, and its keys match wg pubkey", async (t) => {
  if ((await run("wg", ["--version"])) === null) {
    console.warn(`${t.name}: wg is not installed; skipped`);
    return;
  }
  await withTempDir(async (dir) => {
    const state = await loadWireGuardState(`${dir}/wireguard.json`, 1);
    const [path] = await writeClientConfigs(dir, state, 1, "192.0.2.1:51820");
    const peer = clientPeers(state, 1)[0]!;

    // wg-quick names the interface after the file, so it wants 1 to 15 name characters.
    const short = `${dir}/wsclient1.conf`;
    await Deno.copyFile(path!, short);
    const stripped = await run("wg-quick", ["strip", short]);
    if (stripped !== null) {
      assert.equal(stripped.code, 0, stripped.stderr);
      assert.doesNotMatch(stripped.stdout, /^(Address|DNS)\b/m);
      assert.match(stripped.stdout, new RegExp(`^PrivateKey = ${escape(peer.privateKey)}$`, "m"));
      assert.match(stripped.stdout, /^Endpoint = 192\.0\.2\.1:51820$/m);
      assert.match(stripped.stdout, /^AllowedIPs = 0\.0\.0\.0\/0, ::\/0$/m);
    }

    const pub = await run("wg", ["pubkey"], peer.privateKey + "\n");
    assert.equal(pub?.stdout.trim(), peer.publicKey);
    const serverPub = await run("wg", ["pubkey"], state.serverPrivateKey + "\n");
    const conf = await Deno.readTextFile(path!);
    assert.match(conf, new RegExp(`^PublicKey = ${escape(serverPub!.stdout.trim())}$`, "m"));
  });
});

Deno.test("clientConfig() output is accepted by wg setconf on a wireguard-go interface", async (t) => {
  // Needs root and wireguard-go (a user-space interface: no kernel module, no routes, no DNS).
  if (Deno.build.os !== "linux" || Deno.uid() !== 0 || (await run("wireguard-go", ["--version"])) === null) {
    console.warn(`${t.name}: needs root and wireguard-go; skipped`);
    return;
  }
  const name = `wsct${Math.floor(Math.random() * 1e6)}`;
  let daemon: Deno.ChildProcess;
  try {
    daemon = new Deno.Command("wireguard-go", { args: ["-f", name], stdout: "null", stderr: "null" }).spawn();
  } catch (e) {
    console.warn(`${t.name}: cannot start wireguard-go (${e}); skipped`);
    return;
  }
  try {
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      await new Promise((r) => setTimeout(r, 100));
      up = (await run("wg", ["show", name]))?.code === 0;
    }
    if (!up) {
      console.warn(`${t.name}: wireguard-go did not bring up ${name}; skipped`);
      return;
    }
    await withTempDir(async (dir) => {
      const state = await loadWireGuardState(`${dir}/wireguard.json`, 1);
      const [path] = await writeClientConfigs(dir, state, 1, "[2001:db8::1]:51820");
      const short = `${dir}/wsclient1.conf`;
      await Deno.copyFile(path!, short);
      const stripped = await run("wg-quick", ["strip", short]);
      assert.equal(stripped?.code, 0, stripped?.stderr);
      const set = await run("wg", ["setconf", name, "/dev/stdin"], stripped!.stdout);
      assert.equal(set?.code, 0, set?.stderr);
      const shown = await run("wg", ["showconf", name]);
      assert.match(shown!.stdout, new RegExp(`^PrivateKey = ${escape(state.clientPrivateKeys[0]!)}$`, "m"));
      assert.match(
        shown!.stdout,
        new RegExp(`^PublicKey = ${escape(publicKeyOf(state.serverPrivateKey))}$`, "m"),
      );
      assert.match(shown!.stdout, /^Endpoint = \[2001:db8::1\]:51820$/m);
      assert.match(shown!.stdout, /^AllowedIPs = (0\.0\.0\.0\/0, ::\/0|::\/0, 0\.0\.0\.0\/0)$/m);
    });
  } finally {
    daemon.kill("SIGTERM");
    await daemon.status;
  }
});

Deno.test("qrCode() draws a terminal QR code in half-height blocks", async () => {
  const state = fixedState(1);
  const text = clientConfig(state, clientPeers(state, 1)[0]!, "192.0.2.1:51820");
  const qr = await qrCode(text);
  assert.match(qr, /[▀▄█]/);
  const lines = stripVTControlCharacters(qr).split("\n").filter((l) => l !== "");
  assert(lines.length > 20, `only ${lines.length} lines`);
  const widths = new Set(lines.map((l) => l.length));
  assert.equal(widths.size, 1, "every line is as wide");
  // Two rows of modules per line: a square code is about twice as wide as it is tall.
  const width = [...widths][0]!;
  assert(Math.abs(width - 2 * lines.length) <= 1, `${width} wide, ${lines.length} tall`);
});

/** Escapes a string for use inside a regular expression. */
function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
