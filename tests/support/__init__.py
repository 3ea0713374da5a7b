"""Helpers the test suite shares: real processes and the Tebra simulator."""
