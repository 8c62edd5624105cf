/**
 * The `wirescope` command and its files, end to end on loopback (explicit-proxy mode, curl):
 * flow files and the confdir's secrets are created private; a full disk under `-w`/`--har`
 * (a 1 MiB tmpfs mounted by the test) is reported once per file while every flow is still
 * relayed and printed; an unwritable confdir ends the start with exit code 1 and one line.
 * The mounts need root; each is removed at the end.
 */
import assert from "node:assert/strict";

import { Cli, decoder, freePort, LAUNCHER, tmpfs } from "./cli_process.ts";

/** One request through the explicit proxy; returns the body length and the status. */
async function curl(proxyPort: number, url: string): Promise<{ code: number; bytes: number }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", "-x", `http://127.0.0.1:${proxyPort}`, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, bytes: out.stdout.byteLength };
}

Deno.test({
  name: "wirescope: -w and --har files and the confdir's secrets are created private (0600, dir 0700)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-files-" });
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
    const port = freePort();
    // The usual umask: without an explicit mode, files would come out 0644.
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations", // the origin is on loopback
      "--mode",
      `wireguard@127.0.0.1:${freePort()}`,
      "--wg-endpoint",
      "127.0.0.1",
      "-w",
      `${dir}/flows.jsonl`,
      "--har",
      `${dir}/flows.har`,
    ]);
    const mode = async (path: string) => ((await Deno.stat(path)).mode! & 0o777).toString(8);
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      assert.deepEqual(await curl(port, `http://127.0.0.1:${origin.addr.port}/x`), { code: 0, bytes: 2 });
      await cli.waitFor(() => /GET http:\/\/127\.0\.0\.1:\d+\/x/.test(cli.stdout), "the flow line");
      assert.equal(await mode(`${dir}/flows.jsonl`), "600");
      assert.equal(await mode(`${dir}/flows.har.entries`), "600");
      assert.equal(await cli.stop("SIGINT"), 0);
      assert.equal(await mode(`${dir}/flows.har`), "600");
      assert.equal(await mode(`${dir}/conf`), "700");
      for (const secret of ["wirescope-ca.pem", "wireguard.json", "wireguard-client-1.conf"]) {
        assert.equal(await mode(`${dir}/conf/${secret}`), "600", secret);
      }
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "wirescope: a full disk under -w/--har is reported once per file; flows are still relayed and printed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const disk = await tmpfs("1m");
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-full-" });
    // 200 KB bodies: each flow takes ~200-270 KB in each file, so the 1 MiB disk fills after a few.
    const body = "x".repeat(200_000);
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
    const port = freePort();
    const save = `${disk.dir}/flows.jsonl`, har = `${disk.dir}/flows.har`;
    const cli = new Cli([
      "--confdir",
      confdir,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations", // the origin is on loopback
      "-w",
      save,
      "--har",
      har,
    ]);
    const REQUESTS = 12;
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      for (let i = 0; i < REQUESTS; i++) {
        const r = await curl(port, `http://127.0.0.1:${origin.addr.port}/f${i}`);
        assert.deepEqual(r, { code: 0, bytes: body.length }, `request ${i} is relayed whole`);
      }
      const lines = () => cli.stdout.match(/GET http:\/\/127\.0\.0\.1:\d+\/f\d+ << 200/g)?.length ?? 0;
      await cli.waitFor(() => lines() === REQUESTS, "a line for every flow");
      const complaints = (path: string) =>
        cli.stderr.split("\n").filter((l) => l.startsWith(`wirescope: cannot write ${path}:`));
      assert.equal(complaints(save).length, 1, cli.stderr);
      assert.match(complaints(save)[0]!, /No space left on device; later flows are not saved there/);
      assert.equal(complaints(har).length, 1, cli.stderr);
      assert.doesNotMatch(cli.stderr, /flow listener failed/);

      // Still serving after the disk filled.
      assert.equal((await curl(port, `http://127.0.0.1:${origin.addr.port}/after`)).bytes, body.length);

      // What was saved is whole lines, each a flow.
      const saved = (await Deno.readTextFile(save)).split("\n");
      assert.equal(saved.pop(), "", "the file ends with a whole line");
      assert.ok(saved.length >= 1 && saved.length < REQUESTS, `${saved.length} flows saved`);
      for (const line of saved) assert.equal(JSON.parse(line).response.status, 200);

      // On exit: what was not saved is counted; the HAR cannot be written on the full disk either,
      // and the spool keeps its entries. Lost flows make the exit code 1.
      assert.equal(await cli.stop("SIGINT"), 1);
      assert.match(
        cli.stderr,
        new RegExp(`wirescope: ${REQUESTS + 1 - saved.length} flows were not saved to `),
      );
      assert.match(cli.stderr, /HTTP flows are missing from /);
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await disk.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: an unwritable confdir ends the start with exit code 1 and one line",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const ro = await tmpfs("64k", "ro");
    const file = await Deno.makeTempFile();
    try {
      for (
        const [confdir, reason] of [
          [ro.dir, /Read-only file system/],
          [`${ro.dir}/sub`, /Read-only file system/],
          [`${file}/sub`, /Not a directory/],
        ] as const
      ) {
        const out = await new Deno.Command("timeout", {
          args: ["30", LAUNCHER, "--confdir", confdir, "--mode", `regular@127.0.0.1:${freePort()}`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stderr = decoder.decode(out.stderr);
        assert.equal(out.code, 1, `${confdir}: ${stderr}`);
        const lines = stderr.trim().split("\n");
        assert.equal(lines.length, 1, stderr);
        assert.ok(lines[0]!.startsWith(`wirescope: cannot write to the confdir ${confdir}: `), stderr);
        assert.match(lines[0]!, reason);
        assert.equal(decoder.decode(out.stdout), "");
      }
    } finally {
      await ro.close();
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name:
    "wirescope: SIGUSR2 prints one stats line (memory, descriptors, wasm memory, timers, counters); SIGUSR1 opens no inspector port",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-stats-" });
    const child = new Deno.Command(LAUNCHER, {
      args: [
        "--confdir",
        confdir,
        "--mode",
        `wireguard@127.0.0.1:${freePort()}`,
        "--wg-endpoint",
        "127.0.0.1",
        "-q",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { WIRESCOPE_COUNT_TIMERS: "1" },
    }).spawn();
    let stderr = "";
    const reading = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
    })();
    try {
      // Up once the client configuration is written (-q prints no banner).
      for (let i = 0; i < 300; i++) {
        if (await Deno.stat(`${confdir}/wireguard-client-1.conf`).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 200));
      child.kill("SIGUSR2");
      for (let i = 0; i < 100 && !stderr.includes("\n"); i++) await new Promise((r) => setTimeout(r, 50));
      const line = stderr.split("\n").find((l) => l.startsWith("wirescope: stats "));
      assert.ok(line, stderr);
      const stats = JSON.parse(line.slice("wirescope: stats ".length));
      assert.ok(stats.rssBytes > 0 && stats.openFds > 0, line);
      assert.equal(stats.wasmMemoryBytes.length, 1);
      assert.ok(stats.wasmMemoryBytes[0] > 0);
      assert.ok(stats.timers >= 0, "timers are counted when asked");
      assert.equal(stats.flows, 0);
      assert.equal(typeof stats.proxy.activeConnections, "number");
      // Deno opens its inspector on SIGUSR1 (127.0.0.1:9229); the command sets that signal to be
      // ignored a second after start. Past that, the signal changes nothing.
      await new Promise((r) => setTimeout(r, 1500));
      child.kill("SIGUSR1");
      await new Promise((r) => setTimeout(r, 1000));
      const listening = await new Deno.Command("ss", { args: ["-Hltnp"], stdout: "piped" }).output();
      const own = new TextDecoder().decode(listening.stdout).split("\n")
        .filter((l) => l.includes(`pid=${child.pid},`));
      assert.deepEqual(own, [], "no listening TCP socket after SIGUSR1");
      assert.ok(!stderr.includes("Debugger listening"), stderr);
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await reading;
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
