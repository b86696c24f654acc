// Binary frames (proto/FRAMES.md) decoded in the browser, without copying array data.
//
// Every array starts at a multiple of 8 bytes from the start of the body, so a typed-array
// view straight onto the fetched ArrayBuffer is always aligned: a 100k-point map's float32
// coordinates go from the network to the GPU buffer with no intermediate copy.

const MAGIC = [0x47, 0x52, 0x46, 0x31]; // "GRF1"
const MAX_HEADER = 64 * 1024;

const VIEWS = {
  "<f4": [Float32Array, 4],
  "<f8": [Float64Array, 8],
  "<i4": [Int32Array, 4],
  "<i8": [BigInt64Array, 8],
  "<u4": [Uint32Array, 4],
  "|u1": [Uint8Array, 1],
};

export class FrameError extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.name = "FrameError";
    this.field = field;
  }
}

const pad8 = (n) => (8 - (n % 8)) % 8;

// Typed arrays read the platform's byte order; every browser we target is little-endian,
// like the wire. Checked once so that a big-endian host fails loudly instead of misreading.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decode a frame.
 * @param {ArrayBuffer} buffer the whole response body
 * @returns {{meta: object, arrays: Object<string, {data: ArrayBufferView, dtype: string, shape: number[]}>}}
 */
export function decodeFrame(buffer) {
  if (!LITTLE_ENDIAN) throw new FrameError("host", "big-endian browsers are not supported");
  if (!(buffer instanceof ArrayBuffer)) throw new FrameError("body", "expected an ArrayBuffer");
  if (buffer.byteLength < 8) {
    throw new FrameError("body", `${buffer.byteLength} bytes is too short for a frame`);
  }
  const head = new DataView(buffer);
  for (let i = 0; i < 4; i++) {
    if (head.getUint8(i) !== MAGIC[i]) throw new FrameError("magic", "not a GRACE frame (GRF1)");
  }
  const headerLength = head.getUint32(4, true);
  if (headerLength > MAX_HEADER || 8 + headerLength > buffer.byteLength) {
    throw new FrameError("header_length", `${headerLength} does not fit in the body`);
  }
  let header;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(
      new Uint8Array(buffer, 8, headerLength),
    );
    header = JSON.parse(text);
  } catch (err) {
    throw new FrameError("header", `not valid UTF-8 JSON: ${err.message}`);
  }
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isObject(header) || (header.meta !== undefined && !isObject(header.meta))) {
    throw new FrameError("header", 'must be a JSON object {"meta": {...}, "arrays": [...]}');
  }
  const specs = header.arrays ?? [];
  if (!Array.isArray(specs)) throw new FrameError("header.arrays", "must be a list");
  let offset = 8 + headerLength;
  offset += pad8(offset);
  const arrays = {};
  specs.forEach((spec, i) => {
    const name = spec?.name;
    if (typeof name !== "string") {
      throw new FrameError(`header.arrays[${i}]`, "needs a string name");
    }
    if (Object.hasOwn(arrays, name)) throw new FrameError(`arrays.${name}`, "appears twice");
    const view = VIEWS[spec.dtype];
    if (!view) throw new FrameError(`arrays.${name}.dtype`, `${spec.dtype} is not a wire dtype`);
    const shape = spec.shape;
    if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s >= 0)) {
      throw new FrameError(`arrays.${name}.shape`, "must be a list of non-negative integers");
    }
    const [Ctor, itemsize] = view;
    const count = shape.reduce((a, b) => a * b, 1);
    const nbytes = count * itemsize;
    if (offset + nbytes > buffer.byteLength) {
      throw new FrameError(`arrays.${name}`, `declares ${nbytes} bytes but the body ends early`);
    }
    arrays[name] = { data: new Ctor(buffer, offset, count), dtype: spec.dtype, shape };
    offset += nbytes + pad8(nbytes);
  });
  if (offset !== buffer.byteLength) {
    throw new FrameError("body", `${buffer.byteLength - offset} trailing bytes`);
  }
  return { meta: header.meta ?? {}, arrays };
}
