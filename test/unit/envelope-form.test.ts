// The MAIL and RCPT forms Postfix accepts (strict_rfc821_envelopes = no), rewritten into the one smtp-server parses.
import { describe, expect, it } from 'vitest';
import { addressAsSent, canonicalAddressCommand, refuseBadXtext } from '../../src/inbound/envelope-form.ts';

describe('canonicalAddressCommand', () => {
  it.each([
    ['no angle brackets', 'MAIL FROM:scanner@example.test', 'MAIL FROM:<scanner@example.test>'],
    ['a space after the colon, no brackets', 'MAIL FROM: scanner@example.test', 'MAIL FROM:<scanner@example.test>'],
    ['lower case, no brackets, parameters kept', 'mail from: a@example.test SIZE=100 BODY=8BITMIME', 'MAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME'],
    ['a recipient without brackets', 'RCPT TO:r@local.test', 'RCPT TO:<r@local.test>'],
    ['a domain ending in a dot', 'RCPT TO:<r@EXAMPLE.ORG.>', 'RCPT TO:<r@EXAMPLE.ORG>'],
    ['no brackets and a final dot', 'MAIL FROM:a@example.test. SIZE=1', 'MAIL FROM:<a@example.test> SIZE=1'],
    ['spaces around the colon and between the words', 'MAIL  FROM : <a@example.test>', 'MAIL FROM:<a@example.test>'],
    ['a tab before the address', 'RCPT TO:\t<r@local.test> NOTIFY=NEVER', 'RCPT TO:<r@local.test> NOTIFY=NEVER'],
    ['an address without a domain, bracketed for the checks that refuse it', 'MAIL FROM:root', 'MAIL FROM:<root>'],
    ['an ORCPT that encodes UTF-8 in xtext, as Postfix sends it', 'RCPT TO:<ßob@exämple.test> ORCPT=rfc822;+C3+9Fob@ex+C3+A4mple.test', 'RCPT TO:<ßob@exämple.test> ORCPT=rfc822;ßob@exämple.test'],
    ['Cyrillic in ORCPT, NOTIFY kept', 'RCPT TO:<привет@example.test> NOTIFY=NEVER ORCPT=rfc822;+D0+BF+D1+80+D0+B8+D0+B2+D0+B5+D1+82@example.test', 'RCPT TO:<привет@example.test> NOTIFY=NEVER ORCPT=rfc822;привет@example.test'],
    ['UTF-8 in ENVID, an ASCII +HH left for smtp-server', 'MAIL FROM:<a@example.test> ENVID=+C3+A9t+C3+A9+2B1 SMTPUTF8', 'MAIL FROM:<a@example.test> ENVID=été+2B1 SMTPUTF8'],
  ])('rewrites %s', (_name, line, canonical) => {
    expect(canonicalAddressCommand(line)).toBe(canonical);
  });

  it.each([
    ['the canonical form', 'MAIL FROM:<a@example.test> SIZE=10'],
    ['the null sender', 'MAIL FROM:<>'],
    ['an address literal', 'RCPT TO:<r@[192.0.2.1]>'],
    ['two final dots (the syntax check refuses it)', 'RCPT TO:<r@example.org..>'],
    ['a domain that is only a dot', 'RCPT TO:<r@.>'],
    ['a dot after a local part with no domain', 'RCPT TO:<postmaster.>'],
    ['an unclosed bracket', 'MAIL FROM:<a@example.test'],
    ['a bracket only at the end', 'RCPT TO:r@local.test>'],
    ['text after the bracket without a space', 'RCPT TO:<r@local.test>SIZE=1'],
    ['a phrase before the address', 'MAIL FROM:Alice <a@example.test>'],
    ['an address followed by a bracketed one', 'MAIL FROM:a@example.test <b@example.test>'],
    ['a quoted local part with a space', 'RCPT TO:<"john doe"@local.test>'],
    ['no address at all', 'MAIL FROM:'],
    ['another command', 'MAILX FROM:a@b'],
    ['a command that only starts like one', 'RCPT TOO:a@b'],
    ['NOOP', 'NOOP a@b'],
    ['+HH in the address itself', 'RCPT TO:<a+C3+9F@example.test>'],
    ['xtext that is not UTF-8 (smtp-server refuses its C1 control)', 'RCPT TO:<r@example.test> ORCPT=rfc822;+C3+28@example.test'],
    ['lower-case hex, which is not xtext', 'RCPT TO:<r@example.test> ORCPT=rfc822;+c3+9fob@example.test'],
    ['+HH in another parameter', 'MAIL FROM:<a@example.test> AUTH=+C3+9F'],
    ['an ORCPT-like argument of another command', 'RSET <x> ORCPT=rfc822;+C3+9F@example.test'],
  ])('leaves %s as it came', (_name, line) => {
    expect(canonicalAddressCommand(line)).toBe(line);
  });
});

// RFC 3461 §4 xtext in ENVID and ORCPT, refused in Postfix's words.
describe('refuseBadXtext', () => {
  const BAD_ENVID = '501 5.5.4 Bad ENVID parameter syntax';
  const BAD_ORCPT = '501 5.5.4 Error: Bad ORCPT parameter syntax';
  it.each([
    ['a +HH that is not hex', 'MAIL FROM:<a@example.test> ENVID=x+ZZ', BAD_ENVID],
    ['a +H cut short', 'MAIL FROM:<a@example.test> ENVID=ab+4', BAD_ENVID],
    ['a bare + at the end', 'MAIL FROM:<a@example.test> ENVID=ab+', BAD_ENVID],
    ['lower-case hex', 'MAIL FROM:<a@example.test> ENVID=+c3+a9', BAD_ENVID],
    ['a bare =', 'MAIL FROM:<a@example.test> ENVID=a=b', BAD_ENVID],
    ['a lower-case parameter name, among others', 'mail from:<a@example.test> SIZE=10 envid=x+ZZ RET=HDRS', BAD_ENVID],
    ['an address without brackets', 'MAIL FROM: a@example.test ENVID=x+zz', BAD_ENVID],
    ['an ORCPT with a bad +HH', 'RCPT TO:<r@example.test> ORCPT=rfc822;r+zz@example.test', BAD_ORCPT],
    ['an ORCPT without an address type', 'RCPT TO:<r@example.test> ORCPT=r@example.test', BAD_ORCPT],
    ['an ORCPT whose ";" is encoded', 'RCPT TO:<r@example.test> ORCPT=rfc822+3Br@example.test', BAD_ORCPT],
    ['an ORCPT with an empty address type', 'RCPT TO:<r@example.test> ORCPT=;r@example.test', BAD_ORCPT],
    ['an ORCPT with nothing after the type', 'RCPT TO:<r@example.test> ORCPT=rfc822;', BAD_ORCPT],
    ['an ORCPT with a bare =', 'RCPT TO:<r@example.test> NOTIFY=NEVER ORCPT=rfc822;a=b@example.test', BAD_ORCPT],
    // smtp-server would read "+E9" as U+00E9: another value than the one sent.
    ['an ORCPT in Latin-1 (+HH bytes that are not UTF-8)', 'RCPT TO:<r@example.test> ORCPT=rfc822;+E9t+E9@example.test', BAD_ORCPT],
    ['an ENVID with a UTF-8 lead byte and no follow-on', 'MAIL FROM:<a@example.test> ENVID=+C3+28', BAD_ENVID],
    // RFC 3461 §4.4: printable characters; a CR LF in one would be a line end in a report's Original-Envelope-Id.
    ['an ENVID that stands for a line end', 'MAIL FROM:<a@example.test> ENVID=a+0D+0AX-Inj:+20y', BAD_ENVID],
    ['an ENVID that stands for a DEL', 'MAIL FROM:<a@example.test> ENVID=a+7F', BAD_ENVID],
    ['an ENVID that stands for a C1 control (NEL)', 'MAIL FROM:<a@example.test> ENVID=a+C2+85b', BAD_ENVID],
    ['an ENVID with a C1 control as it is', 'MAIL FROM:<a@example.test> ENVID=a\u0085b SMTPUTF8', BAD_ENVID],
    ['an ENVID that stands for U+2028', 'MAIL FROM:<a@example.test> ENVID=a+E2+80+A8b', BAD_ENVID],
    ['an ORCPT that stands for a line feed', 'RCPT TO:<r@example.test> ORCPT=rfc822;a+0Ab@example.test', BAD_ORCPT],
  ])('refuses %s', (_name, line, reply) => {
    const refusal = refuseBadXtext(line);
    expect(refusal && `${refusal.code} ${refusal.status} ${refusal.text}`).toBe(reply);
  });

  it.each([
    ['an ENVID of printable characters and upper-case +HH', 'MAIL FROM:<a@example.test> ENVID=q+2B1!~<>,;'],
    ['UTF-8 as +HH', 'MAIL FROM:<a@example.test> ENVID=+C3+A9t+C3+A9 SMTPUTF8'],
    ['UTF-8 as it is (RFC 6531 §3.3)', 'MAIL FROM:<a@example.test> ENVID=été SMTPUTF8'],
    ['an ORCPT as Postfix sends it', 'RCPT TO:<ßob@example.test> ORCPT=rfc822;+C3+9Fob@example.test'],
    ['an ORCPT of type utf-8 (RFC 6533 utf-8-addr-xtext)', 'RCPT TO:<ßob@example.test> ORCPT=utf-8;\\x{DF}ob@example.test'],
    ['an ORCPT of type utf-8 in UTF-8 (utf-8-addr-unitext)', 'RCPT TO:<ßob@example.test> ORCPT=utf-8;ßob@example.test'],
    ['an empty value (smtp-server: requires a value)', 'MAIL FROM:<a@example.test> ENVID='],
    ['"+ZZ" in the address itself', 'RCPT TO:<a+ZZ@example.test> ORCPT=rfc822;a+2BZZ@example.test'],
    // Other parameters are checked elsewhere: ENVID on RCPT is an unsupported option (555), AUTH= is xtext unused.
    ['ENVID on RCPT', 'RCPT TO:<r@example.test> ENVID=x+ZZ'],
    ['ORCPT on MAIL', 'MAIL FROM:<a@example.test> ORCPT=x+ZZ'],
    ['another parameter', 'MAIL FROM:<a@example.test> AUTH=x+ZZ'],
    ['a name that only starts like one', 'MAIL FROM:<a@example.test> ENVIDX=x+ZZ'],
    ['no parameters', 'MAIL FROM:<a@example.test>'],
    ['another command', 'NOOP ENVID=x+ZZ'],
    ['a phrase before the address (a syntax error of its own)', 'MAIL FROM:Alice <a@example.test> ENVID=x+ZZ'],
  ])('takes %s', (_name, line) => {
    expect(refuseBadXtext(line)).toBeUndefined();
  });
});

// smtp-server decodes an A-label to Unicode; the domain stays as the client sent it.
describe('addressAsSent', () => {
  it.each([
    ['an A-label sender', 'a@bücher.example', 'MAIL FROM:<a@xn--bcher-kva.example> SIZE=10', 'a@xn--bcher-kva.example'],
    ['an A-label recipient with a UTF-8 local part', 'bøb@exämple.test', 'RCPT TO:<bøb@xn--exmple-cua.test>', 'bøb@xn--exmple-cua.test'],
    ['a source route dropped, the domain as sent', 'a@bücher.example', 'RCPT TO:<@relay.test:a@xn--bcher-kva.example>', 'a@xn--bcher-kva.example'],
    ['a U-label, sent so (SMTPUTF8)', 'a@bücher.example', 'MAIL FROM:<a@bücher.example> SMTPUTF8', 'a@bücher.example'],
    ['an ASCII domain', 'a@example.test', 'MAIL FROM:<a@example.test>', 'a@example.test'],
    ['an IPv6 literal as smtp-server normalised it', 'a@[IPv6:2001:db8::1]', 'RCPT TO:<a@[IPv6:2001:DB8:0::1]>', 'a@[IPv6:2001:db8::1]'],
    ['the null sender', '', 'MAIL FROM:<>', ''],
    ['a line that is not canonical', 'a@bücher.example', 'MAIL FROM:Alice <a@xn--bcher-kva.example>', 'a@bücher.example'],
    ['an invalid A-label, which punycode made empty', 'a@', 'MAIL FROM:<a@xn-->', 'a@xn--'],
    ['a Unicode full stop, which punycode made ASCII', 'bob@local.test.', 'RCPT TO:<bob@local.test\u3002>', 'bob@local.test\u3002'],
    ['a fullwidth full stop inside', 'bob@local.test', 'RCPT TO:<bob@local\uFF0Etest>', 'bob@local\uFF0Etest'],
  ])('%s', (_name, parsed, line, expected) => {
    expect(addressAsSent(parsed, line)).toBe(expected);
  });
});
