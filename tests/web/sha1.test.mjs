// The incremental SHA-1 of web/sha1.js (used by the page for files too large for
// crypto.subtle in one piece) against Node's crypto: every length around the block and
// padding boundaries, arbitrary split points, and the length encoding past 4 GiB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

const { Sha1, sha1Hex } = createRequire(import.meta.url)('../../web/sha1.js');
const node = (b) => createHash('sha1').update(b).digest('hex');

test('known answers (FIPS 180 examples)', () => {
  assert.equal(sha1Hex(''), 'da39a3ee5e6b4b0d3255bfef95601890afd80709');
  assert.equal(sha1Hex('abc'), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  assert.equal(
    sha1Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
    '84983e441c3bd26ebaae4aa1f95129e5e54670f1',
  );
  assert.equal(sha1Hex('a'.repeat(1_000_000)), '34aa973cd4c4daa4f61eeb2bdbad27316534016f');
});

test('every length from 0 to 300 bytes, in one piece', () => {
  for (let n = 0; n <= 300; n++) {
    const b = randomBytes(n);
    assert.equal(sha1Hex(b), node(b), `length ${n}`);
  }
});

test('random split points give the same digest', () => {
  for (let round = 0; round < 200; round++) {
    const b = randomBytes(Math.floor(Math.random() * 5000));
    const h = new Sha1();
    for (let i = 0; i < b.length; ) {
      const step = 1 + Math.floor(Math.random() * 200);
      h.update(b.subarray(i, i + step));
      i += step;
    }
    assert.equal(h.hexDigest(), node(b));
  }
});

test('ArrayBuffer, typed views and strings are accepted', () => {
  const b = randomBytes(1000);
  const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
  assert.equal(sha1Hex(ab), node(b));
  assert.equal(sha1Hex(new DataView(ab, 10, 500)), node(b.subarray(10, 510)));
  assert.equal(sha1Hex('nonce.', b), node(Buffer.concat([Buffer.from('nonce.'), b])));
  assert.equal(sha1Hex('héllo'), node(Buffer.from('héllo', 'utf8')));
});

test('a few MiB fed in 4 MiB-and-odd slices', () => {
  const b = randomBytes(9 * 1024 * 1024 + 17);
  const h = new Sha1();
  const slice = 4 * 1024 * 1024 + 3;
  for (let i = 0; i < b.length; i += slice) h.update(b.subarray(i, i + slice));
  assert.equal(h.hexDigest(), node(b));
});

test('the length trailer counts bits past 2^32 bytes', () => {
  assert.deepEqual([...Sha1.lengthTrailer(0)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...Sha1.lengthTrailer(3)], [0, 0, 0, 0, 0, 0, 0, 24]);
  // 2^32 + 5 bytes = 2^35 + 40 bits.
  assert.deepEqual([...Sha1.lengthTrailer(2 ** 32 + 5)], [0, 0, 0, 8, 0, 0, 0, 40]);
  // 64 GiB - 1 byte (the server's default upload limit).
  const n = 64 * 2 ** 30 - 1;
  const bits = BigInt(n) * 8n;
  const want = [...Array(8)].map((_, i) => Number((bits >> BigInt(56 - 8 * i)) & 0xffn));
  assert.deepEqual([...Sha1.lengthTrailer(n)], want);
});

test('no update after the digest', () => {
  const h = new Sha1().update('x');
  h.digest();
  assert.throws(() => h.update('y'));
});
