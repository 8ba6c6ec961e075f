curl -X POST https://api.apiframe.ai/v2/videos/generate \
  -H "X-API-Key: afk_your_api_key_here" \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "a cat sitting on a windowsill watching rain fall outside",
    "model": "veo-3.1-fast",
    "veoParams": {
      "duration": 4,
      "generate_audio": true
    }
  }'
