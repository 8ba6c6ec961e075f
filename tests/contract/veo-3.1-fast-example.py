import requests

response = requests.post(
    "https://api.apiframe.ai/v2/videos/generate",
    headers={
        "X-API-Key": "afk_your_api_key_here",
        "Content-Type": "application/json",
    },
    json={
        "prompt": "a cat sitting on a windowsill watching rain fall outside",
        "model": "veo-3.1-fast",
        "veoParams": {
            "duration": 4,
            "generate_audio": True,
        },
    },
)
print(response.json())
