/**
 * The built-in addons, each written against the public addon API (src/addons/types.ts) like any
 * user's addon, and the table the command line uses: each one's option (mitmproxy's name, for
 * `--set`), its flag, and the check of a value (so a bad one stops the start with one line).
 *
 * A built-in is loaded only when its option is given: an addon with HTTP hooks makes the proxy
 * hold every exchange for it, which costs when nothing would change.
 * @module
 */
import type { Addon } from "../types.ts";
import { allowList, parseAllowPattern } from "./allow_list.ts";
import { anticache } from "./anticache.ts";
import { anticomp } from "./anticomp.ts";
import { blockList, parseBlockSpec } from "./block_list.ts";
import { mapLocal, parseMapLocalSpec } from "./map_local.ts";
import { mapRemote, parseMapRemoteSpec } from "./map_remote.ts";
import { modifyBody, parseModifyBodySpec } from "./modify_body.ts";
import { modifyHeaders, parseModifyHeaderSpec } from "./modify_headers.ts";
import { parseStickyCookie, stickyCookie } from "./stickycookie.ts";

export { SpecError } from "./spec.ts";

/** One built-in: its option, its command-line flag, how a value is checked, and the addon. */
export interface Builtin {
  /** The option name (`--set NAME=VALUE`), as in mitmproxy. */
  option: string;
  /** The flag, e.g. `--block-list`. */
  flag: string;
  /** A flag without a value (`--anticache`): the option is a boolean. */
  boolean: boolean;
  /** Throws a {@link SpecError} for a bad value. */
  check(value: string): void;
  make(): Addon;
}

const checkBool = (v: string) => {
  if (!/^(true|false|1|0|yes|no|on|off)$/i.test(v)) throw new Error(`expected true or false, got ${v}`);
};

/** The built-ins, in the order they run (mitmproxy's: blocking first, rewriting after). */
export const BUILTINS: readonly Builtin[] = [
  {
    option: "allow_list",
    flag: "--allow-list",
    boolean: false,
    check: (v) => void parseAllowPattern(v),
    make: allowList,
  },
  {
    option: "block_list",
    flag: "--block-list",
    boolean: false,
    check: (v) => void parseBlockSpec(v),
    make: blockList,
  },
  { option: "anticache", flag: "--anticache", boolean: true, check: checkBool, make: anticache },
  { option: "anticomp", flag: "--anticomp", boolean: true, check: checkBool, make: anticomp },
  {
    option: "map_remote",
    flag: "--map-remote",
    boolean: false,
    check: (v) => void parseMapRemoteSpec(v),
    make: mapRemote,
  },
  {
    option: "map_local",
    flag: "--map-local",
    boolean: false,
    check: (v) => void parseMapLocalSpec(v),
    make: mapLocal,
  },
  {
    option: "modify_body",
    flag: "--modify-body",
    boolean: false,
    check: (v) => void parseModifyBodySpec(v),
    make: modifyBody,
  },
  {
    option: "modify_headers",
    flag: "--modify-headers",
    boolean: false,
    check: (v) => void parseModifyHeaderSpec(v),
    make: modifyHeaders,
  },
  {
    option: "stickycookie",
    flag: "--stickycookie",
    boolean: false,
    check: (v) => void parseStickyCookie(v),
    make: stickyCookie,
  },
];

/**
 * Checks `name=value` settings of built-in options (others are ignored) and returns the problem
 * of the first bad one as one line naming its flag, or undefined when all are good.
 */
export function checkBuiltinSettings(pairs: readonly string[]): string | undefined {
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    const b = BUILTINS.find((x) => x.option === pair.slice(0, eq));
    if (!b) continue;
    const value = pair.slice(eq + 1);
    if (value === "" && !b.boolean) continue;
    try {
      b.check(value);
    } catch (e) {
      return `${b.flag} ${JSON.stringify(value)}: ${(e as Error).message}`;
    }
  }
  return undefined;
}

/**
 * The built-in addons the settings ask for: those whose option is set (to a non-empty value;
 * `false` for a boolean one does not load it), in {@link BUILTINS} order. The manager then
 * applies the settings themselves (`AddonManager.set`).
 */
export function builtinAddons(pairs: readonly string[]): Addon[] {
  const wanted = new Set<string>();
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) continue;
    const value = pair.slice(eq + 1);
    if (value === "" || /^(false|0|no|off)$/i.test(value)) continue;
    wanted.add(pair.slice(0, eq));
  }
  return BUILTINS.filter((b) => wanted.has(b.option)).map((b) => b.make());
}
