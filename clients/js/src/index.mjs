// axon-client: the public API.
export * from './client.mjs';
export { verifySignature, validateEvent, encodeEvent, eventId, canonicalPayload, canonicalTags } from './axon.mjs';
