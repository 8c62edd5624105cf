import assert from "node:assert/strict";
import { type CliOptions, parseFlags, USAGE, UsageError } from "./flags.ts";

/** Asserts that `parseFlags(args)` fails with one line matching `pattern`. */
function assertUsageError(args: string[], pattern: RegExp): void {
  assert.throws(() => parseFlags(args), (e: unknown) => {
    assert(e instanceof UsageError, `expected a UsageError for ${JSON.stringify(args)}, got ${e}`);
    assert.match(e.message, pattern);
    assert(!e.message.includes("\n"), `more than one line: ${JSON.stringify(e.message)}`);
    return true;
  });
}

Deno.test("parseFlags() fills in defaults when given nothing", () => {
  const expected: CliOptions = {
    modes: [{ kind: "wireguard", host: "", port: 51820 }],
    confdir: `${Deno.env.get("HOME")}/.wirescope`,
    peers: 1,
    ignoreHosts: [],
    allowHosts: [],
    upstreamCa: [],
    sslInsecure: false,
    dnsServers: [],
    headTimeout: 30_000,
    idleTimeout: 600_000,
    serverTimeout: 60_000,
    maxConnectionsPerClient: 4096,
    http2: { maxConcurrentStreams: 100, maxHeaderListSize: 65536 },
    allowLocalDestinations: false,
    keepHostHeader: false,
    certs: [],
    quic: "reject",
    wgLimits: {},
    noStore: false,
    modesGiven: false,
    quiet: false,
    verbose: false,
    help: false,
    version: false,
    scripts: [],
    sets: [],
    builtinSettings: [],
  };
  assert.deepEqual(parseFlags([]), expected);
});

Deno.test("parseFlags() turns the built-in addons' flags into option settings, checked", () => {
  assert.deepEqual(
    parseFlags([
      "--anticache",
      "--block-list",
      "|~d ads|404",
      "--block-list",
      "/~u a|b/444",
      "--stickycookie",
      "~d x",
    ])
      .builtinSettings,
    ["block_list=|~d ads|404", "block_list=/~u a|b/444", "anticache=true", "stickycookie=~d x"],
  );
  assert.throws(
    () => parseFlags(["--map-remote", "|only-one"]),
    /^UsageError: --map-remote "\|only-one": expected/,
  );
  assert.throws(() => parseFlags(["--anticache=yes"]), UsageError);
});

Deno.test("parseFlags() reads repeated --mode in order", () => {
  assert.deepEqual(parseFlags(["--mode", "wireguard@51821", "--mode=regular@[::1]:8081"]).modes, [
    { kind: "wireguard", host: "", port: 51821 },
    { kind: "regular", host: "::1", port: 8081 },
  ]);
  assert.deepEqual(parseFlags(["--mode", "wireguard:k.json"]).modes, [
    { kind: "wireguard", keyFile: "k.json", host: "", port: 51820 },
  ]);
});

Deno.test("parseFlags() rejects a bad --mode spec with the parser's reason", () => {
  assertUsageError(
    ["--mode", "socks4"],
    /^--mode: Cannot parse mode "socks4": unknown mode .*"regular", "wireguard"/,
  );
  assertUsageError(["--mode", "regular:x"], /regular mode takes no data/);
  assertUsageError(["--mode", "wireguard@70000"], /"70000" is not a port/);
});

Deno.test("parseFlags() rejects two modes on the same port and protocol", () => {
  assertUsageError(["--mode", "regular", "--mode", "regular@8080"], /both listen on TCP port 8080/);
  assertUsageError(["--mode", "dns@5353", "--mode", "socks5@5353"], /both listen on TCP port 5353/);
  assertUsageError(["--mode", "dns@51820", "--mode", "wireguard"], /both listen on UDP port 51820/);
  assertUsageError(
    ["--mode", "wireguard", "--mode", "wireguard:other.json"],
    /both listen on UDP port 51820/,
  );
  assertUsageError(["--mode", "regular@127.0.0.1:9000", "--mode", "regular@9000"], /TCP port 9000/);
});

Deno.test("parseFlags() allows modes that share a port number but not a protocol or host", () => {
  assert.equal(parseFlags(["--mode", "wireguard@8080", "--mode", "regular@8080"]).modes.length, 2);
  assert.equal(parseFlags(["--mode", "regular@0", "--mode", "regular@0"]).modes.length, 2);
  assert.equal(
    parseFlags(["--mode", "regular@127.0.0.1:8080", "--mode", "regular@[::1]:8080"]).modes.length,
    2,
  );
});

Deno.test("parseFlags() reads --confdir and expands a leading ~/", () => {
  assert.equal(parseFlags(["--confdir", "/etc/ws"]).confdir, "/etc/ws");
  assert.equal(parseFlags(["--confdir=~/ws"]).confdir, `${Deno.env.get("HOME")}/ws`);
  assertUsageError(["--confdir="], /--confdir needs a directory/);
  assertUsageError(["--confdir"], /^option --confdir needs a value$/);
});

Deno.test("parseFlags() takes the default --confdir from HOME and fails without it", async () => {
  // A child process, so that changing HOME cannot disturb tests running beside this one.
  const script = `
    import { parseFlags } from ${JSON.stringify(new URL("./flags.ts", import.meta.url).href)};
    try { console.log(parseFlags(Deno.args).confdir); } catch (e) { console.log(e.name + ": " + e.message); }
  `;
  const run = async (env: Record<string, string>, args: string[] = []) => {
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", script, ...args],
      env,
      clearEnv: true,
    }).output();
    return new TextDecoder().decode(stdout).trim();
  };
  assert.equal(await run({ HOME: "/home/someone/" }), "/home/someone/.wirescope");
  assert.equal(await run({}), "UsageError: cannot find the home directory (HOME is not set); pass --confdir");
  assert.equal(await run({}, ["--confdir", "x"]), "x");
});

Deno.test("parseFlags() reads --peers from 1 to 250", () => {
  assert.equal(parseFlags(["--peers", "1"]).peers, 1);
  assert.equal(parseFlags(["--peers", "250"]).peers, 250);
  for (const bad of ["0", "251", "-1", "1.5", "two", "", "1e2", " 3"]) {
    assertUsageError([`--peers=${bad}`], /^--peers .*: expected a whole number from 1 to 250$/);
  }
});

Deno.test("parseFlags() reads --wg-endpoint as HOST, HOST:PORT or an IPv6 address", () => {
  assert.deepEqual(parseFlags(["--wg-endpoint", "vpn.example.com"]).wgEndpoint, { host: "vpn.example.com" });
  assert.deepEqual(parseFlags(["--wg-endpoint", "192.0.2.7:443"]).wgEndpoint, {
    host: "192.0.2.7",
    port: 443,
  });
  assert.deepEqual(parseFlags(["--wg-endpoint", "[2001:db8::1]:51820"]).wgEndpoint, {
    host: "2001:db8::1",
    port: 51820,
  });
  assert.deepEqual(parseFlags(["--wg-endpoint", "[2001:db8::1]"]).wgEndpoint, { host: "2001:db8::1" });
  assert.deepEqual(parseFlags(["--wg-endpoint", "2001:db8::1"]).wgEndpoint, { host: "2001:db8::1" });
});

Deno.test("parseFlags() rejects a bad --wg-endpoint", () => {
  const cases: [string, RegExp][] = [
    ["", /expected HOST\[:PORT\]/],
    [":51820", /expected HOST\[:PORT\]/],
    ["51820", /"51820" is not a host name/],
    ["host:0", /"0" is not a port/],
    ["host:65536", /"65536" is not a port/],
    ["host:", /"" is not a port/],
    ["host:port", /"port" is not a port/],
    ["bad_host", /"bad_host" is not a host name/],
    ["[2001:db8::1", /missing "]"/],
    ["[2001:db8::1]51820", /expected ":PORT"/],
    ["[example.com]:1", /not an IPv6 address/],
    ["2001:db8::zz", /not an IPv6 address/],
  ];
  for (const [text, pattern] of cases) assertUsageError([`--wg-endpoint=${text}`], pattern);
  assertUsageError(["--wg-endpoint=x:y"], /^--wg-endpoint x:y: /);
});

Deno.test("parseFlags() compiles repeated --ignore-hosts to case-insensitive patterns", () => {
  const { ignoreHosts } = parseFlags(["--ignore-hosts", "^example\\.com", "--ignore-hosts", "apple"]);
  assert.equal(ignoreHosts.length, 2);
  assert(ignoreHosts[0]!.test("EXAMPLE.com:443"));
  assert(ignoreHosts[1]!.test("www.apple.com"));
});

Deno.test("parseFlags() compiles repeated --allow-hosts", () => {
  const { allowHosts } = parseFlags(["--allow-hosts", "a\\.test", "--allow-hosts=b\\.test"]);
  assert.deepEqual(allowHosts.map((r) => r.source), ["a\\.test", "b\\.test"]);
});

Deno.test("parseFlags() names an invalid host pattern", () => {
  assertUsageError(["--ignore-hosts", "(foo"], /^--ignore-hosts \(foo: not a valid regular expression/);
  assertUsageError(["--allow-hosts", "[a-"], /^--allow-hosts \[a-: not a valid regular expression/);
});

Deno.test("parseFlags() rejects --ignore-hosts together with --allow-hosts", () => {
  assertUsageError(
    ["--ignore-hosts", "a", "--allow-hosts", "b"],
    /--ignore-hosts and --allow-hosts cannot be used together/,
  );
});

Deno.test("parseFlags() accepts readable --upstream-ca files", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/a.pem`, "a");
    Deno.writeTextFileSync(`${dir}/b.pem`, "b");
    assert.deepEqual(
      parseFlags(["--upstream-ca", `${dir}/a.pem`, "--upstream-ca", `${dir}/b.pem`]).upstreamCa,
      [`${dir}/a.pem`, `${dir}/b.pem`],
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseFlags() says why an --upstream-ca file cannot be read", () => {
  const dir = Deno.makeTempDirSync();
  try {
    assertUsageError(
      ["--upstream-ca", `${dir}/missing.pem`],
      new RegExp(`^cannot read --upstream-ca ${dir}/missing.pem: no such file or directory$`),
    );
    assertUsageError(["--upstream-ca", dir], /^cannot read --upstream-ca .*: it is a directory$/);
    Deno.writeTextFileSync(`${dir}/secret.pem`, "x", { mode: 0o000 });
    Deno.chmodSync(`${dir}/secret.pem`, 0o000);
    if (Deno.uid() !== 0) {
      assertUsageError(
        ["--upstream-ca", `${dir}/secret.pem`],
        /^cannot read --upstream-ca .*: permission denied$/,
      );
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseFlags() reads --ssl-insecure", () => {
  assert.equal(parseFlags(["--ssl-insecure"]).sslInsecure, true);
  assertUsageError(["--ssl-insecure=yes"], /^option --ssl-insecure takes no value$/);
});

Deno.test("parseFlags() reads repeated --dns-server with port 53 by default", () => {
  assert.deepEqual(
    parseFlags(["--dns-server", "1.1.1.1", "--dns-server", "[2606:4700::1111]:5353"]).dnsServers,
    [
      { hostname: "1.1.1.1", port: 53 },
      { hostname: "2606:4700::1111", port: 5353 },
    ],
  );
  assert.deepEqual(parseFlags(["--dns-server=dns.example:853"]).dnsServers, [
    { hostname: "dns.example", port: 853 },
  ]);
  assertUsageError(
    ["--dns-server", "1.1.1.1:99999"],
    /^--dns-server 1\.1\.1\.1:99999: "99999" is not a port/,
  );
  assertUsageError(["--dns-server", "a b"], /^--dns-server a b: "a b" is not a host name/);
});

Deno.test("parseFlags() reads -w and --save when the directory exists", () => {
  const dir = Deno.makeTempDirSync();
  try {
    assert.equal(parseFlags(["-w", `${dir}/flows`]).save, `${dir}/flows`);
    assert.equal(parseFlags(["--save", "flows"]).save, "flows");
    assertUsageError(
      ["--save", `${dir}/nope/flows`],
      /^--save .*\/nope\/flows: cannot use directory .*: no such file/,
    );
    assertUsageError(["-w", dir], /^--save .*: is a directory, not a file$/);
    assertUsageError(["-w"], /^option --save needs a value$/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseFlags() reads --har when the directory exists", () => {
  const dir = Deno.makeTempDirSync();
  try {
    assert.equal(parseFlags(["--har", `${dir}/out.har`]).har, `${dir}/out.har`);
    assertUsageError(
      ["--har", `${dir}/nope/out.har`],
      /^--har .*out\.har: cannot use directory .*\/nope: no such file/,
    );
    Deno.writeTextFileSync(`${dir}/file`, "");
    assertUsageError(["--har", `${dir}/file/out.har`], /^--har .*: .*\/file is not a directory$/);
    assertUsageError(["--har="], /^--har needs a file name/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseFlags() reads -q/--quiet and -v/--verbose but not both", () => {
  assert.equal(parseFlags(["-q"]).quiet, true);
  assert.equal(parseFlags(["--quiet"]).quiet, true);
  assert.equal(parseFlags(["-v"]).verbose, true);
  assert.equal(parseFlags(["--verbose"]).verbose, true);
  assertUsageError(["-q", "-v"], /^--quiet and --verbose cannot be used together$/);
  assertUsageError(["-qv"], /^--quiet and --verbose cannot be used together$/);
});

Deno.test("parseFlags() reads -h/--help and --version", () => {
  assert.equal(parseFlags(["-h"]).help, true);
  assert.equal(parseFlags(["--help"]).help, true);
  assert.equal(parseFlags(["--version"]).version, true);
  assertUsageError(["-V"], /^unknown option -V \(see --help\)$/);
});

Deno.test("parseFlags() reads the genkey and pubkey commands", () => {
  assert.equal(parseFlags(["genkey"]).command, "genkey");
  assert.equal(parseFlags(["pubkey"]).command, "pubkey");
  assert.equal("command" in parseFlags([]), false);
  assertUsageError(
    ["serve"],
    /^unknown command: serve \(expected genkey, pubkey or export, which comes first; see --help\)$/,
  );
  assertUsageError(["genkey", "extra"], /^unexpected argument after genkey: extra$/);
});

Deno.test("parseFlags() rephrases parseArgs errors as one short line", () => {
  assertUsageError(["--foo"], /^unknown option --foo \(see --help\)$/);
  assertUsageError(["-x"], /^unknown option -x \(see --help\)$/);
  assertUsageError(["--mode"], /^option --mode needs a value$/);
  assertUsageError(
    ["--mode", "--quiet"],
    /^option --mode needs a value \(for a value that starts with "-", write --mode=VALUE\)$/,
  );
  assertUsageError(["--peers", "-v"], /^option --peers needs a value/);
  assertUsageError(["--quiet=1"], /^option --quiet takes no value$/);
});

Deno.test("USAGE mentions every flag and gives examples", () => {
  for (
    const flag of [
      "--mode",
      "--confdir",
      "--peers",
      "--wg-endpoint",
      "--ignore-hosts",
      "--allow-hosts",
      "--upstream-ca",
      "--ssl-insecure",
      "--dns-server",
      "-w, --save",
      "--har",
      "--store FILE",
      "--no-store",
      "--store-max SIZE",
      "-f, --view-filter EXPR",
      "--save-filter EXPR",
      "-r, --read FILE",
      "-q, --quiet",
      "-v, --verbose",
      "-h, --help",
      "--version",
      "genkey",
      "pubkey",
    ]
  ) {
    assert(USAGE.includes(flag), `USAGE does not mention ${flag}`);
  }
  assert.match(USAGE, /Examples:/);
  assert.match(USAGE, /default: ~\/\.wirescope/);
});

Deno.test("parseFlags() reads the limits in seconds and counts, 0 turning one off", () => {
  const o = parseFlags([
    "--head-timeout",
    "0.25",
    "--idle-timeout=0",
    "--server-timeout",
    "5",
    "--max-connections-per-client",
    "10",
    "--max-connections",
    "0",
    "--allow-local-destinations",
  ]);
  assert.equal(o.headTimeout, 250);
  assert.equal(o.idleTimeout, 0);
  assert.equal(o.serverTimeout, 5000);
  assert.equal(o.maxConnectionsPerClient, 10);
  assert.equal(o.maxConnections, 0);
  assert.equal(o.allowLocalDestinations, true);
  assert.equal(parseFlags([]).maxConnections, undefined, "the library picks the total cap by default");
  assertUsageError(["--head-timeout", "-1"], /--head-timeout/);
  assertUsageError(["--idle-timeout", "ten"], /--idle-timeout ten: expected a number of seconds/);
  assertUsageError(["--max-connections-per-client", "1.5"], /expected a whole number/);
  assertUsageError(["--max-connections", "x"], /--max-connections x/);
  for (
    const flag of [
      "--head-timeout",
      "--idle-timeout",
      "--server-timeout",
      "--max-connections-per-client",
      "--max-connections",
    ]
  ) {
    assert.ok(USAGE.includes(flag), `${flag} in --help`);
  }
  assert.match(USAGE, /--allow-local-destinations/);
  assert.match(USAGE, /default: 30\)/);
  assert.match(USAGE, /default: 600\)/);
});

Deno.test("parseFlags() reads the WireGuard data plane's limits", () => {
  const o = parseFlags([
    "--wg-max-half-open",
    "100",
    "--wg-half-open-timeout",
    "2.5",
    "--wg-max-udp-conversations=50",
    "--wg-udp-timeout",
    "30",
    "--wg-buffer-budget",
    "256",
  ]);
  assert.deepEqual(o.wgLimits, {
    maxHalfOpenPerPeer: 100,
    halfOpenTimeoutSeconds: 2.5,
    maxUdpConversationsPerPeer: 50,
    udpTimeoutSeconds: 30,
    bufferBudget: 256 * 1024 * 1024,
  });
  assertUsageError(["--wg-max-half-open", "0"], /--wg-max-half-open 0: expected a number from 1/);
  assertUsageError(["--wg-buffer-budget", "5000"], /--wg-buffer-budget 5000/);
  assertUsageError(["--wg-max-udp-conversations", "1.5"], /expected a whole number/);
  for (const flag of ["--wg-max-half-open", "--wg-half-open-timeout", "--wg-max-udp-conversations"]) {
    assert.ok(USAGE.includes(flag), `${flag} in --help`);
  }
});

Deno.test("parseFlags() reads --store, --no-store and --store-max sizes", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const o = parseFlags(["--store", `${dir}/run.db`, "--store-max", "500M"]);
    assert.equal(o.store, `${dir}/run.db`);
    assert.equal(o.storeMax, 500 * 1024 * 1024);
    assert.equal(parseFlags(["--store-max", "2G"]).storeMax, 2 * 1024 ** 3);
    assert.equal(parseFlags(["--store-max=1.5g"]).storeMax, 1.5 * 1024 ** 3);
    assert.equal(parseFlags(["--store-max", "64MiB"]).storeMax, 64 * 1024 ** 2);
    assert.equal(parseFlags(["--no-store"]).noStore, true);
    assert.equal(parseFlags([]).store, undefined);
    assertUsageError(
      ["--store-max", "lots"],
      /^--store-max lots: expected a size of at least 1M, such as 500M or 2G$/,
    );
    assertUsageError(["--store-max", "10k"], /at least 1M/);
    assertUsageError(
      ["--store", "/no/such/dir/run.db"],
      /^--store \/no\/such\/dir\/run\.db: cannot use directory/,
    );
    assertUsageError(["--store", dir], /is a directory/);
    assertUsageError(["--no-store", "--store", `${dir}/x.db`], /--no-store cannot be used with --store/);
    assertUsageError(["--no-store", "--store-max", "1G"], /--no-store cannot be used with --store-max/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("parseFlags() checks -f/--view-filter and --save-filter, naming the column of a mistake", () => {
  const o = parseFlags(["-f", "~m POST", "--save-filter", "~d example.com & !~c 404"]);
  assert.equal(o.viewFilter, "~m POST");
  assert.equal(o.saveFilter, "~d example.com & !~c 404");
  assert.equal(parseFlags(["--view-filter=~q"]).viewFilter, "~q");
  assertUsageError(
    ["-f", "~m ("],
    /^--view-filter "~m \(": expected a regex after ~m, found '\(' at column 4$/,
  );
  assertUsageError(
    ["--save-filter", "~d a & ~zz"],
    /^--save-filter "~d a & ~zz": unknown operator ~zz at column 8$/,
  );
  assertUsageError(["-f", "(~q"], /never closed at column 1/);
});

Deno.test("parseFlags() reads -r/--read and tells whether a --mode was given", () => {
  const o = parseFlags(["-r", "old.db"]);
  assert.equal(o.read, "old.db");
  assert.equal(o.modesGiven, false);
  const both = parseFlags(["--read", "old.db", "--mode", "wireguard"]);
  assert.equal(both.read, "old.db");
  assert.equal(both.modesGiven, true);
  assertUsageError(["-r", ""], /--read needs a file name/);
});

Deno.test("--quic takes reject (the default) or passthrough, and --help says what reject does", () => {
  assert.equal(parseFlags([]).quic, "reject");
  assert.equal(parseFlags(["--quic", "reject"]).quic, "reject");
  assert.equal(parseFlags(["--quic", "passthrough"]).quic, "passthrough");
  assertUsageError(["--quic", "drop"], /--quic must be reject or passthrough/);
  assert.match(USAGE, /--quic reject\|passthrough/);
  assert.match(USAGE, /ICMP port unreachable/);
});

Deno.test("--web: alone the default 127.0.0.1:8081, a port, HOST[:PORT]; --web-password needs it", () => {
  assert.deepEqual(parseFlags(["--web"]).web, { hostname: "127.0.0.1", port: 8081 });
  assert.deepEqual(parseFlags(["--web", "--mode", "regular"]).web, { hostname: "127.0.0.1", port: 8081 });
  assert.deepEqual(parseFlags(["--web", "9000"]).web, { hostname: "127.0.0.1", port: 9000 });
  assert.deepEqual(parseFlags(["--web", "0.0.0.0:8082"]).web, { hostname: "0.0.0.0", port: 8082 });
  assert.deepEqual(parseFlags(["--web", "[::1]"]).web, { hostname: "::1", port: 8081 });
  assert.equal(parseFlags(["--web", "--web-password", "correct horse"]).webPassword, "correct horse");
  assert.equal(parseFlags([]).web, undefined);
  assertUsageError(["--web-password", "correct horse"], /--web-password needs --web/);
  assertUsageError(["--web", "--web-password", "short"], /at least 8/);
  assertUsageError(["--web", "--no-store"], /not with --no-store/);
  assertUsageError(["--web", "x:y"], /not a port/);
});

Deno.test("parseFlags() reads --proxyauth USER:PASS (the password may hold ':') and rejects other forms", () => {
  assert.deepEqual(parseFlags(["--proxyauth", "alice:s3:cret"]).proxyAuth, {
    username: "alice",
    password: "s3:cret",
  });
  assert.equal(parseFlags([]).proxyAuth, undefined);
  for (const bad of ["alice", ":pass", "alice:"]) {
    assertUsageError(["--proxyauth", bad], /--proxyauth takes USER:PASS/);
  }
});

Deno.test("parseFlags() reads the HTTP/2 limits offered to clients", () => {
  assert.deepEqual(parseFlags([]).http2, { maxConcurrentStreams: 100, maxHeaderListSize: 65536 });
  const o = parseFlags(["--h2-max-concurrent-streams", "8", "--h2-max-header-list-size=16384"]);
  assert.deepEqual(o.http2, { maxConcurrentStreams: 8, maxHeaderListSize: 16384 });
  assertUsageError(
    ["--h2-max-concurrent-streams", "0"],
    /--h2-max-concurrent-streams 0: expected a whole number from 1/,
  );
  assertUsageError(["--h2-max-concurrent-streams", "many"], /--h2-max-concurrent-streams many/);
  assertUsageError(["--h2-max-header-list-size", "100"], /from 1024 to 16777216/);
  assert.match(USAGE, /--h2-max-concurrent-streams N/);
  assert.match(USAGE, /--h2-max-header-list-size BYTES/);
});

Deno.test("parseFlags() reads --tun-mtu from 576 to 65535 (absent: the interface's default)", () => {
  assert.equal(parseFlags(["--tun-mtu", "1280"]).tunMtu, 1280);
  assert.equal(parseFlags([]).tunMtu, undefined);
  for (const bad of ["575", "65536", "1.5", "x"]) {
    assertUsageError([`--tun-mtu=${bad}`], /^--tun-mtu .*: expected a whole number from 576 to 65535$/);
  }
});
