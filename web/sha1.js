// SHA-1 in plain JavaScript, fed incrementally.
//
// crypto.subtle.digest has no streaming interface: it wants the whole input in memory.
// The web page uses it for small files and this for large ones (hashed a slice at a time),
// and where crypto.subtle is missing altogether (plain http on a non-loopback address).
// Tested against Node's crypto in tests/web/sha1.test.js and against crypto.subtle in the
// browser test.
(function (root) {
  'use strict';

  function Sha1() {
    this.st = new Int32Array([0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476, 0xc3d2e1f0 | 0]);
    this.block = new Uint8Array(64); // a partly filled block carried between updates
    this.blockLen = 0;
    this.total = 0; // bytes fed so far (exact up to 2^53)
    this.w = new Int32Array(80);
    this.done = false;
  }

  function asBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (typeof data === 'string') return new TextEncoder().encode(data);
    throw new TypeError('sha1: expected bytes or a string');
  }

  // Compresses the 64-byte blocks of `b` from `off` up to `end` (a multiple of 64 bytes
  // further) into the state `st` (5 words), with `w` as the message schedule. A plain
  // function over a run of blocks with block-scoped loop variables: V8 (Chromium) runs
  // this shape about three times faster than a method per block.
  function compress(st, w, b, off, end) {
    let h0 = st[0], h1 = st[1], h2 = st[2], h3 = st[3], h4 = st[4];
    for (; off < end; off += 64) {
      for (let t = 0, o = off; t < 16; t++, o += 4) {
        w[t] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
      }
      for (let t = 16; t < 80; t++) {
        const x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16];
        w[t] = (x << 1) | (x >>> 31);
      }
      let a = h0, bb = h1, c = h2, d = h3, e = h4, tmp;
      for (let t = 0; t < 20; t++) {
        tmp = (((a << 5) | (a >>> 27)) + ((bb & c) | (~bb & d)) + e + 0x5a827999 + w[t]) | 0;
        e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
      }
      for (let t = 20; t < 40; t++) {
        tmp = (((a << 5) | (a >>> 27)) + (bb ^ c ^ d) + e + 0x6ed9eba1 + w[t]) | 0;
        e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
      }
      for (let t = 40; t < 60; t++) {
        tmp = (((a << 5) | (a >>> 27)) + ((bb & c) | (bb & d) | (c & d)) + e + 0x8f1bbcdc + w[t]) | 0;
        e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
      }
      for (let t = 60; t < 80; t++) {
        tmp = (((a << 5) | (a >>> 27)) + (bb ^ c ^ d) + e + 0xca62c1d6 + w[t]) | 0;
        e = d; d = c; c = (bb << 30) | (bb >>> 2); bb = a; a = tmp;
      }
      h0 = (h0 + a) | 0;
      h1 = (h1 + bb) | 0;
      h2 = (h2 + c) | 0;
      h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0;
    }
    st[0] = h0; st[1] = h1; st[2] = h2; st[3] = h3; st[4] = h4;
  }

  // Feeds bytes (Uint8Array, any ArrayBufferView, ArrayBuffer, or a string as UTF-8).
  Sha1.prototype.update = function (data) {
    if (this.done) throw new Error('sha1: update after digest');
    var bytes = asBytes(data);
    var n = bytes.length, i = 0;
    this.total += n;
    if (this.blockLen > 0) {
      var take = Math.min(64 - this.blockLen, n);
      this.block.set(bytes.subarray(0, take), this.blockLen);
      this.blockLen += take;
      i = take;
      if (this.blockLen < 64) return this;
      compress(this.st, this.w, this.block, 0, 64);
      this.blockLen = 0;
    }
    var whole = i + Math.floor((n - i) / 64) * 64;
    compress(this.st, this.w, bytes, i, whole);
    i = whole;
    if (i < n) {
      this.block.set(bytes.subarray(i), 0);
      this.blockLen = n - i;
    }
    return this;
  };

  // The message length in bits, as the 8 big-endian bytes that end the padding.
  Sha1.lengthTrailer = function (totalBytes) {
    var hi = Math.floor(totalBytes / 0x20000000); // (bytes * 8) / 2^32
    var lo = (totalBytes % 0x20000000) * 8; // < 2^32
    var out = new Uint8Array(8);
    for (var k = 0; k < 4; k++) {
      out[k] = (hi >>> (24 - 8 * k)) & 0xff;
      out[4 + k] = (lo >>> (24 - 8 * k)) & 0xff;
    }
    return out;
  };

  // The 20-byte digest; the object cannot be fed afterwards.
  Sha1.prototype.digest = function () {
    if (this.done) throw new Error('sha1: digest twice');
    var total = this.total;
    var padLen = (this.blockLen < 56 ? 56 : 120) - this.blockLen;
    var pad = new Uint8Array(padLen + 8);
    pad[0] = 0x80;
    pad.set(Sha1.lengthTrailer(total), padLen);
    this.update(pad);
    this.done = true;
    var out = new Uint8Array(20);
    var hs = this.st;
    for (var k = 0; k < 5; k++) {
      out[4 * k] = (hs[k] >>> 24) & 0xff;
      out[4 * k + 1] = (hs[k] >>> 16) & 0xff;
      out[4 * k + 2] = (hs[k] >>> 8) & 0xff;
      out[4 * k + 3] = hs[k] & 0xff;
    }
    return out;
  };

  function toHex(bytes) {
    var s = '';
    for (var k = 0; k < bytes.length; k++) s += (bytes[k] < 16 ? '0' : '') + bytes[k].toString(16);
    return s;
  }

  Sha1.prototype.hexDigest = function () {
    return toHex(this.digest());
  };

  // SHA-1 of one buffer (or several, concatenated), as lowercase hex.
  function sha1Hex() {
    var h = new Sha1();
    for (var k = 0; k < arguments.length; k++) h.update(arguments[k]);
    return h.hexDigest();
  }

  var api = { Sha1: Sha1, sha1Hex: sha1Hex, toHex: toHex };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.FilestoreSha1 = api;
})(typeof self !== 'undefined' ? self : this);
