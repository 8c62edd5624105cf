/**
 * The flow store through the `wirescope` command, end to end on loopback (explicit-proxy mode,
 * curl, a loopback origin): a run records its flows in a fresh file under the confdir (the
 * oldest runs removed so that 10 remain), `-r` prints the same lines and `-f` narrows them; a bad
 * filter and a garbage file end with exit code 2 and one line; after a SIGKILL, every flow whose
 * line was printed is in the store.
 */
import assert from "node:assert/strict";

import { Cli, decoder, freePort, LAUNCHER, sh } from "./cli_process.ts";

/** Runs the command to its end. */
async function wirescope(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("timeout", {
    args: ["60", LAUNCHER, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function curl(proxyPort: number, url: string, extra: string[] = []): Promise<number> {
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--max-time",
      "20",
      "-o",
      "/dev/null",
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      ...extra,
      url,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  return out.code;
}

/** The flow lines of an output (lines naming the origin). */
const flowLines = (stdout: string, origin: number) =>
  stdout.split("\n").filter((l) => l.includes(`http://127.0.0.1:${origin}/`));

Deno.test({
  name: "wirescope: a run is stored under the confdir; -r prints the same flows and -f narrows them",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-store-e2e-" });
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
    const o = origin.addr.port;
    const port = freePort();
    // Ten older runs: the oldest goes, so that with the new one ten remain.
    await Deno.mkdir(`${dir}/conf/flows`, { recursive: true });
    for (let i = 0; i < 10; i++) {
      await Deno.writeTextFile(`${dir}/conf/flows/2020-01-01T00-00-0${i}.000Z.db`, "");
    }
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations", // the origin is on loopback
    ]);
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      assert.equal(await curl(port, `http://127.0.0.1:${o}/a`), 0);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/b`, ["-d", "x=1"]), 0);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/c`), 0);
      await cli.waitFor(() => flowLines(cli.stdout, o).length === 3, "three flow lines");
      assert.equal(await cli.stop("SIGINT"), 0);
      const live = flowLines(cli.stdout, o);
      assert.match(live[1]!, /POST http:\/\/127\.0\.0\.1:\d+\/b << 200/);

      const runs = [...Deno.readDirSync(`${dir}/conf/flows`)].map((e) => e.name).filter((n) =>
        n.endsWith(".db")
      )
        .sort();
      assert.equal(runs.length, 10, runs.join(" "));
      assert.ok(!runs.includes("2020-01-01T00-00-00.000Z.db"), "the oldest run was removed");
      assert.match(
        cli.stderr,
        /removed the oldest flow store .*2020-01-01T00-00-00\.000Z\.db \(keeping 10 runs\)/,
      );
      const stored = `${dir}/conf/flows/${runs.at(-1)}`;
      assert.match(cli.stderr, new RegExp(`flows stored in ${stored.replace(/[.]/g, "\\.")}`));
      assert.equal(((await Deno.stat(stored)).mode! & 0o777).toString(8), "600");

      const all = await wirescope(["-r", stored]);
      assert.equal(all.code, 0, all.stderr);
      assert.deepEqual(flowLines(all.stdout, o), live);
      const posts = await wirescope(["-r", stored, "-f", "~m POST"]);
      assert.equal(posts.code, 0, posts.stderr);
      assert.deepEqual(flowLines(posts.stdout, o), [live[1]]);
      assert.equal(
        posts.stdout.trim().split("\n").length,
        1,
        "only the flow lines: no banner without a mode",
      );
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: a bad filter and a garbage -r file end with exit code 2 and one line",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-store-e2e-" });
    try {
      const bad = await wirescope([
        "--confdir",
        dir,
        "--mode",
        `regular@127.0.0.1:${freePort()}`,
        "-f",
        "~m (",
      ]);
      assert.equal(bad.code, 2);
      assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      assert.match(bad.stderr, /^wirescope: --view-filter "~m \(": .* at column 4\n$/);
      const save = await wirescope(["--save-filter", "~d a & ~bogus"]);
      assert.equal(save.code, 2);
      assert.match(
        save.stderr,
        /^wirescope: --save-filter "~d a & ~bogus": unknown operator ~bogus at column 8\n$/,
      );

      await Deno.writeFile(`${dir}/garbage.db`, new Uint8Array(5000).map((_, i) => (i * 131) & 255));
      const garbage = await wirescope(["-r", `${dir}/garbage.db`]);
      assert.equal(garbage.code, 2);
      assert.equal(garbage.stdout, "");
      assert.match(garbage.stderr, /^wirescope: .*garbage\.db is not a saved run \(expected .*\)\n$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: after a SIGKILL, every flow whose line was printed is in the store",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-store-e2e-" });
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
    const o = origin.addr.port;
    const port = freePort();
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations",
      "--store",
      `${dir}/run.db`,
    ]);
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      // Requests keep coming while the process is killed: some flows may be in flight.
      const load = (async () => {
        for (let i = 0; i < 200; i++) {
          if ((await curl(port, `http://127.0.0.1:${o}/k${i}`)) !== 0) return;
        }
      })();
      await cli.waitFor(() => flowLines(cli.stdout, o).length >= 20, "20 flow lines");
      await cli.stop("SIGKILL");
      await load;
      const printed = flowLines(cli.stdout, o).filter((l) => / << 200 /.test(l));
      assert.ok(printed.length >= 20);
      const read = await wirescope(["-r", `${dir}/run.db`]);
      assert.equal(read.code, 0, read.stderr);
      const stored = new Set(flowLines(read.stdout, o));
      for (const line of printed) assert.ok(stored.has(line), `printed but not stored: ${line}`);
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: a full disk under the store is one log line; recording stops, the proxy keeps serving",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-store-full-" });
    const disk = await Deno.makeTempDir({ prefix: "wirescope-tmpfs-" });
    await sh(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk]);
    // 200 KB bodies: the 1 MiB disk is full after a few flows.
    const body = "x".repeat(200_000);
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
    const o = origin.addr.port;
    const port = freePort();
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations",
      "--store",
      `${disk}/run.db`,
    ]);
    const REQUESTS = 12;
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      for (let i = 0; i < REQUESTS; i++) assert.equal(await curl(port, `http://127.0.0.1:${o}/f${i}`), 0);
      await cli.waitFor(() => flowLines(cli.stdout, o).length === REQUESTS, "a line for every flow");
      const complaints = cli.stderr.split("\n").filter((l) => /flow store/.test(l) && /fail/.test(l));
      assert.ok(complaints.length >= 1 && complaints.length <= 2, cli.stderr);
      assert.match(cli.stderr, /full|disk|space/i);
      assert.match(cli.stderr, /recording stopped \(the proxy keeps running\)/);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/after`), 0, "still serving");
      await cli.waitFor(() => flowLines(cli.stdout, o).length === REQUESTS + 1, "the line of the last flow");
      assert.equal(await cli.stop("SIGINT"), 0);
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await sh(["umount", disk]).catch(() => sh(["umount", "-l", disk]));
      await Deno.remove(disk, { recursive: true });
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: --store-max drops the oldest flows with a log line",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-store-max-" });
    const body = "y".repeat(200_000);
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
    const o = origin.addr.port;
    const port = freePort();
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations",
      "--store",
      `${dir}/run.db`,
      "--store-max",
      "1M",
    ]);
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      for (let i = 0; i < 12; i++) assert.equal(await curl(port, `http://127.0.0.1:${o}/m${i}`), 0);
      await cli.waitFor(() => flowLines(cli.stdout, o).length === 12, "a line for every flow");
      assert.equal(await cli.stop("SIGINT"), 0);
      assert.match(cli.stderr, /the flow store is over --store-max 1\.0m: dropped the \d+ oldest flows/);
      const read = await wirescope(["-r", `${dir}/run.db`]);
      const kept = flowLines(read.stdout, o);
      assert.ok(kept.length >= 3 && kept.length < 12, `${kept.length} flows kept`);
      assert.match(kept.at(-1)!, /\/m11 << 200/, "the newest flows are the ones kept");
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
