/**
 * The `wirescope` command. For now it knows `--help`, `--version` and `genkey`/`pubkey`; the
 * proxy modes arrive with the CLI issue.
 * @module
 */
import { parseArgs } from "node:util";
import { generatePrivateKey, publicKeyOf } from "../core/keys.ts";
import denoJson from "../../deno.json" with { type: "json" };

const USAGE = `wirescope ${denoJson.version}: an intercepting HTTPS proxy with a WireGuard mode

Usage:
  deno run -A mod.ts [options]
  deno run -A mod.ts genkey            print a new private key (like wg genkey)
  deno run -A mod.ts pubkey < KEY      print the public key of a private key (like wg pubkey)

Options:
  -h, --help       show this help
  --version        show the version
`;

/**
 * Runs the command line.
 *
 * @param args The arguments (without the program).
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { help: { type: "boolean", short: "h" }, version: { type: "boolean" } },
    });
  } catch (e) {
    console.error(`wirescope: ${(e as Error).message}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  if (parsed.values.version) {
    console.log(denoJson.version);
    return 0;
  }
  const [command, ...rest] = parsed.positionals;
  if (rest.length > 0) {
    console.error(`wirescope: unexpected argument: ${rest[0]}`);
    return 2;
  }
  switch (command) {
    case "genkey":
      console.log(generatePrivateKey());
      return 0;
    case "pubkey": {
      const text = await new Response(Deno.stdin.readable).text();
      try {
        console.log(publicKeyOf(text));
        return 0;
      } catch (e) {
        console.error(`wirescope: ${(e as Error).message}`);
        return 2;
      }
    }
    case undefined:
      console.error("wirescope: no mode yet: the proxy modes are not built; see --help");
      return 2;
    default:
      console.error(`wirescope: unknown command: ${command} (see --help)`);
      return 2;
  }
}
