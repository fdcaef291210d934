// Generate one image and follow it live:
//   IMAGEGEN_ADDRESS=127.0.0.1:50051 IMAGEGEN_API_KEY=$(cat data/dev-api-key) \
//     node examples/generate.mjs "a red fox in snow" 16:9
import { createClient } from '../src/index.js';

const [prompt = 'a serene mountain landscape at sunset', aspectRatio = '1:1'] = process.argv.slice(2);
const client = createClient();
try {
  const created = await client.createGeneration({ prompt, aspectRatio, meta: { example: 'generate.mjs' } });
  console.log(`created ${created.id}`);
  let last;
  for await (const event of client.watchGeneration(created.id)) {
    last = event.generation;
    console.log(`revision ${event.revision}: ${last.status.replace('GENERATION_STATUS_', '')}`);
  }
  if (last.status === 'GENERATION_STATUS_FAILED') {
    console.error(`failed: ${last.error.code}: ${last.error.message}`);
    process.exitCode = 4;
  } else {
    const image = last.outputImage;
    console.log(`image ${image.id} ${image.width}x${image.height} ${image.url}`);
  }
} catch (error) {
  console.error(`imagegen: ${error.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
