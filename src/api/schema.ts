/**
 * Object schemas of the OpenAPI document tied to the wire types (wire.ts): the compiler checks
 * that a schema's `properties` name exactly the fields of its type and that `required` lists
 * exactly the fields that are not optional, so the document and the types cannot drift apart.
 */

/** The fields of T that are not optional (a field that may be null is still required). */
type RequiredKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : K }[keyof T];

/** Accepts `R` when it lists every key of `All`; else demands a property naming those missing. */
type Complete<All, R extends readonly unknown[]> = [Exclude<All, R[number]>] extends [never] ? unknown : { missingRequired: Exclude<All, R[number]> };

/**
 * `wireObject<DiskInfo>()({ required: [...], properties: {...} })`: an object schema checked
 * against wire type T; any other keyword (`additionalProperties`, `description`, a nullable
 * `type`) goes along as given.
 */
export function wireObject<T>() {
  return <const R extends readonly RequiredKeys<T>[], const P extends { [K in keyof Required<T>]: unknown }, const X extends object = {}>(
    schema: { required: R & Complete<RequiredKeys<T>, R>; properties: P & Record<Exclude<keyof P, keyof T>, never> } & X,
  ) => ({ type: 'object' as const, ...schema });
}
