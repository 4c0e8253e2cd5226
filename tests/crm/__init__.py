"""Bitrix24 and Kommo sinks against the fake CRMs over real HTTP."""
