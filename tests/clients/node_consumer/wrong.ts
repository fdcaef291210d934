// Must not type-check (tests/clients/test_node.py): a prompt is a string, a meta value JSON,
// a webhook event one of processing/completed.
import { createClient } from '@imagegen/client';

await createClient().createGeneration({ prompt: 42 });
await createClient().createGeneration({ prompt: 'x', meta: { when: new Date() } });
await createClient().createGeneration({ prompt: 'x', outputFormat: 'tiff' });
await createClient().createGeneration({ prompt: 'x', webhook: { url: 'http://h', events: ['sent'] } });
