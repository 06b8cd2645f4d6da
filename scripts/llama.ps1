<#
.SYNOPSIS
    Runs llama-orch (llama_orchestrator) from the right Python environment.

.DESCRIPTION
    Finds the environment in this order and forwards every argument to llama-orch,
    exiting with its exit code:
      1. $env:LLAMA_ORCH_VENV  (a virtual environment folder)
      2. a .venv folder beside the repository (the parent of this scripts folder)
      3. the Python launcher: py -3 -m llama_orchestrator
      4. python -m llama_orchestrator from PATH

.EXAMPLE
    .\scripts\llama.ps1 ps --all
    .\scripts\llama.ps1 up gemma
#>
$ErrorActionPreference = 'Stop'

function Find-VenvPython([string]$Venv) {
    if (-not $Venv) { return $null }
    foreach ($rel in @('Scripts\python.exe', 'bin/python')) {
        $candidate = Join-Path -Path $Venv -ChildPath $rel
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { return $candidate }
    }
    return $null
}

$repo = Split-Path -Path $PSScriptRoot -Parent
$python = Find-VenvPython $env:LLAMA_ORCH_VENV
if ($env:LLAMA_ORCH_VENV -and -not $python) {
    Write-Error "LLAMA_ORCH_VENV is set to '$($env:LLAMA_ORCH_VENV)' but it holds no python" -ErrorAction Continue
    exit 2
}
if (-not $python) { $python = Find-VenvPython (Join-Path -Path $repo -ChildPath '.venv') }

$prefix = @()
if (-not $python) {
    if (Get-Command -Name 'py' -CommandType Application -ErrorAction SilentlyContinue) {
        $python = 'py'
        $prefix = @('-3')
    }
    elseif (Get-Command -Name 'python' -CommandType Application -ErrorAction SilentlyContinue) {
        $python = 'python'
    }
    else {
        Write-Error 'no Python found: create .venv beside the repository, set LLAMA_ORCH_VENV, or install Python' -ErrorAction Continue
        exit 1
    }
}

# $args holds every argument as given (quoted paths with spaces stay one argument).
& $python @prefix -m llama_orchestrator @args
exit $LASTEXITCODE
