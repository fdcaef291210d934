// liveUrl builds the same URL as the Python SDK's live_url (checked against it in pytest).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { liveUrl } from '../src/index.js';

test('liveUrl encodes the prompt and the options', () => {
  const url = liveUrl('http://cdn.example/', 'my-proj', 'hero', 'a cat & a dog', {
    aspectRatio: '16:9',
    autoEnhance: true,
    template: 'cinematic',
  });
  const parsed = new URL(url);
  assert.equal(parsed.pathname, '/cdn/my-proj/live/hero');
  assert.equal(parsed.searchParams.get('prompt'), 'a cat & a dog');
  assert.equal(parsed.searchParams.get('aspectRatio'), '16:9');
  assert.equal(parsed.searchParams.get('autoEnhance'), 'true');
  assert.equal(parsed.searchParams.get('template'), 'cinematic');
  assert.equal(liveUrl('http://x', 'p', 's', 'plain'), 'http://x/cdn/p/live/s?prompt=plain');
});
