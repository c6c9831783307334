"""Signal processing on captured audio: resampling, log-mel features, voice activity.

Everything here is numpy on 16 kHz mono float32 blocks and knows nothing of
asyncio, devices or the engine.
"""
