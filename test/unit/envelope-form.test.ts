// The MAIL and RCPT forms Postfix accepts (strict_rfc821_envelopes = no), rewritten into the one smtp-server parses.
import { describe, expect, it } from 'vitest';
import { canonicalAddressCommand } from '../../src/inbound/envelope-form.ts';

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
