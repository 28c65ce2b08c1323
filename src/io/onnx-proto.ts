/**
 * The subset of onnx.proto (ONNX IR, proto2) that the reader needs, as a protobufjs JSON
 * descriptor: tsc emits only .ts files, so the schema lives in code rather than in a .proto file.
 *
 * Field names and numbers are onnx.proto's. Deliberately left out (protobuf skips unknown fields,
 * so files that use them still decode): subgraphs (AttributeProto.g/graphs: If/Loop bodies),
 * sparse tensors, functions, training info, and the recursive TypeProto variants
 * (sequence/map/optional). Without them no message type is recursive, so hostile input cannot
 * drive the decoder into deep recursion.
 */
import protobuf from 'protobufjs';

const packed = { packed: true };

/** protobufjs JSON descriptor of the ONNX subset (package `onnx`). */
export const ONNX_PROTO_DESCRIPTOR = {
  nested: {
    onnx: {
      nested: {
        ModelProto: {
          fields: {
            ir_version: { type: 'int64', id: 1 },
            opset_import: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            producer_name: { type: 'string', id: 2 },
            producer_version: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            model_version: { type: 'int64', id: 5 },
            doc_string: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            metadata_props: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        OperatorSetIdProto: {
          fields: {
            domain: { type: 'string', id: 1 },
            version: { type: 'int64', id: 2 },
          },
        },
        StringStringEntryProto: {
          fields: {
            key: { type: 'string', id: 1 },
            value: { type: 'string', id: 2 },
          },
        },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            doc_string: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            value_info: { rule: 'repeated', type: 'ValueInfoProto', id: 13 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            op_type: { type: 'string', id: 4 },
            domain: { type: 'string', id: 7 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            doc_string: { type: 'string', id: 6 },
          },
        },
        AttributeProto: {
          fields: {
            name: { type: 'string', id: 1 },
            ref_attr_name: { type: 'string', id: 21 },
            doc_string: { type: 'string', id: 13 },
            type: { type: 'int32', id: 20 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            floats: { rule: 'repeated', type: 'float', id: 7 },
            ints: { rule: 'repeated', type: 'int64', id: 8 },
            strings: { rule: 'repeated', type: 'bytes', id: 9 },
            tensors: { rule: 'repeated', type: 'TensorProto', id: 10 },
          },
        },
        ValueInfoProto: {
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
            doc_string: { type: 'string', id: 3 },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensor_type'] } },
          fields: {
            tensor_type: { type: 'TypeProtoTensor', id: 1 },
            denotation: { type: 'string', id: 6 },
          },
        },
        // onnx.proto nests this as TypeProto.Tensor; the name does not reach the wire.
        TypeProtoTensor: {
          fields: {
            elem_type: { type: 'int32', id: 1 },
            shape: { type: 'TensorShapeProto', id: 2 },
          },
        },
        TensorShapeProto: {
          fields: {
            dim: { rule: 'repeated', type: 'Dimension', id: 1 },
          },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dim_value', 'dim_param'] } },
              fields: {
                dim_value: { type: 'int64', id: 1 },
                dim_param: { type: 'string', id: 2 },
                denotation: { type: 'string', id: 3 },
              },
            },
          },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1, options: packed },
            data_type: { type: 'int32', id: 2 },
            segment: { type: 'Segment', id: 3 },
            float_data: { rule: 'repeated', type: 'float', id: 4, options: packed },
            int32_data: { rule: 'repeated', type: 'int32', id: 5, options: packed },
            string_data: { rule: 'repeated', type: 'bytes', id: 6 },
            int64_data: { rule: 'repeated', type: 'int64', id: 7, options: packed },
            name: { type: 'string', id: 8 },
            doc_string: { type: 'string', id: 12 },
            raw_data: { type: 'bytes', id: 9 },
            external_data: { rule: 'repeated', type: 'StringStringEntryProto', id: 13 },
            data_location: { type: 'int32', id: 14 },
            double_data: { rule: 'repeated', type: 'double', id: 10, options: packed },
            uint64_data: { rule: 'repeated', type: 'uint64', id: 11, options: packed },
          },
          nested: {
            Segment: {
              fields: {
                begin: { type: 'int64', id: 1 },
                end: { type: 'int64', id: 2 },
              },
            },
          },
        },
      },
    },
  },
};

/** TensorProto.DataType codes. */
export const ONNX_DTYPE = {
  UNDEFINED: 0, FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9,
  FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13, COMPLEX64: 14, COMPLEX128: 15, BFLOAT16: 16,
} as const;

/** AttributeProto.AttributeType codes. */
export const ONNX_ATTR = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10,
} as const;

const root = protobuf.Root.fromJSON(ONNX_PROTO_DESCRIPTOR);
/** The protobufjs type of onnx.ModelProto. */
export const ModelProtoType = root.lookupType('onnx.ModelProto');

/** A 64-bit integer as protobufjs decodes it: a number, or a Long when the `long` package is present. */
export type Int64Like = number | { toNumber(): number };

/** Converts a decoded int64 to a JS number (exact up to 2^53). */
export function int64ToNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { toNumber?: unknown }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  if (typeof v === 'string' || typeof v === 'bigint') return Number(v);
  return NaN;
}

/** Decoded message shapes (only what the reader touches; absent fields read as their defaults). */
export interface RawTensor {
  dims: unknown[];
  data_type: number;
  segment?: unknown;
  float_data: number[];
  int32_data: number[];
  string_data: Uint8Array[];
  int64_data: unknown[];
  name: string;
  raw_data: Uint8Array;
  external_data: { key: string; value: string }[];
  data_location: number;
  double_data: number[];
  uint64_data: unknown[];
}

export interface RawAttribute {
  name: string;
  type: number;
  f: number;
  i: unknown;
  s: Uint8Array;
  t?: RawTensor | null;
  floats: number[];
  ints: unknown[];
  strings: Uint8Array[];
  tensors: RawTensor[];
}

export interface RawNode {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  domain: string;
  attribute: RawAttribute[];
}

export interface RawDimension {
  dim_value?: unknown;
  dim_param?: string;
}

export interface RawValueInfo {
  name: string;
  type?: { tensor_type?: { elem_type: number; shape?: { dim: RawDimension[] } | null } | null } | null;
}

export interface RawGraph {
  node: RawNode[];
  name: string;
  initializer: RawTensor[];
  input: RawValueInfo[];
  output: RawValueInfo[];
  value_info: RawValueInfo[];
}

export interface RawModel {
  ir_version: unknown;
  opset_import: { domain: string; version: unknown }[];
  producer_name: string;
  producer_version: string;
  graph?: RawGraph | null;
  metadata_props: { key: string; value: string }[];
}

/** Decodes ModelProto bytes; throws protobufjs' own errors (RangeError, Error) on malformed input. */
export function decodeModelProto(bytes: Uint8Array): RawModel {
  return ModelProtoType.decode(bytes) as unknown as RawModel;
}

/**
 * Encodes a plain object shaped like ModelProto (snake_case field names as in onnx.proto; int64 as
 * numbers; bytes as Uint8Array) — for writing small models, e.g. test fixtures. Throws if the
 * object does not fit the schema.
 */
export function encodeModelProto(model: Record<string, unknown>): Uint8Array {
  const err = ModelProtoType.verify(model);
  if (err) throw new Error(`encodeModelProto: ${err}`);
  return ModelProtoType.encode(ModelProtoType.fromObject(model)).finish();
}
