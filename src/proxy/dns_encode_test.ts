import assert from "node:assert/strict";
import { buildDnsQuery, parseDnsMessage } from "./dns_message.ts";
import { DnsEncodeError, encodeDnsMessage, localDnsResponse } from "./dns_encode.ts";

Deno.test("encodeDnsMessage() writes back what parseDnsMessage() read, for each rendered type", () => {
  const query = parseDnsMessage(buildDnsQuery("example.test", 1, 0x1234));
  const message = {
    ...localDnsResponse(query, 0, ["10.1.2.3"]),
    answers: [
      { name: "example.test", type: 1, typeName: "A", class: 1, ttl: 60, data: "10.1.2.3" },
      { name: "example.test", type: 28, typeName: "AAAA", class: 1, ttl: 60, data: "2001:db8::1" },
      { name: "example.test", type: 5, typeName: "CNAME", class: 1, ttl: 5, data: "other.test" },
      { name: "example.test", type: 15, typeName: "MX", class: 1, ttl: 5, data: "10 mail.test" },
      { name: "example.test", type: 16, typeName: "TXT", class: 1, ttl: 5, data: '"a b" "c\\"d"' },
      { name: "example.test", type: 33, typeName: "SRV", class: 1, ttl: 5, data: "1 2 443 srv.test" },
      { name: "example.test", type: 99, typeName: "TYPE99", class: 1, ttl: 5, data: "\\# 2 abcd" },
    ],
    authorities: [{
      name: "test",
      type: 6,
      typeName: "SOA",
      class: 1,
      ttl: 5,
      data: "ns.test host.test 1 2 3 4 5",
    }],
  };
  const back = parseDnsMessage(encodeDnsMessage(message));
  assert.deepEqual(back, message);
});

Deno.test("localDnsResponse(): addresses of the asked family; NXDOMAIN without records", () => {
  const query = parseDnsMessage(buildDnsQuery("x.test", 1, 7));
  const a = parseDnsMessage(encodeDnsMessage(localDnsResponse(query, 0, ["10.0.0.9", "2001:db8::9"])));
  assert.deepEqual(a.answers.map((r) => r.data), ["10.0.0.9"]);
  assert.equal(a.id, 7);
  const nx = parseDnsMessage(encodeDnsMessage(localDnsResponse(query, 3)));
  assert.equal(nx.rcodeName, "NXDOMAIN");
  assert.deepEqual(nx.answers, []);
  assert.throws(() => localDnsResponse(query, 0, ["not an address"]), DnsEncodeError);
});
